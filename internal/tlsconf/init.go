package tlsconf

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// InitOptions says what Init writes.
type InitOptions struct {
	Dir   string
	Nodes []string // node ids: the common name of each node certificate
	Hosts []string // names and addresses every node certificate holds
	// Client is the common name of the client certificate (default "admin").
	Client string
	// ClientRole is the role the client certificate carries as its
	// organizational unit (default "admin").
	ClientRole string
	// Valid is how long the certificates last (default a year; the CA ten).
	Valid time.Duration
}

// Init writes a CA (ca.pem, ca-key.pem), a certificate per node usable as
// both API and peer certificate (<node>.pem, <node>-key.pem: common name
// the node id, the hosts and the node id as subject names, server and
// client use), a client certificate (client.pem, client-key.pem; its
// organizational unit is the role the server gives it) and an
// Ed25519 token signing pair (token-key.pem, token-key.pub.pem). It
// refuses to overwrite an existing CA. It returns the files written.
func Init(o InitOptions) ([]string, error) {
	if len(o.Nodes) == 0 {
		return nil, errors.New("name at least one node")
	}
	if o.Client == "" {
		o.Client = "admin"
	}
	if o.ClientRole == "" {
		o.ClientRole = "admin"
	}
	if o.Valid <= 0 {
		o.Valid = 365 * 24 * time.Hour
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(o.Dir, "ca.pem")); err == nil {
		return nil, fmt.Errorf("%s already holds a CA (ca.pem); choose another --dir or remove it", o.Dir)
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "baldurd CA", Organization: []string{"baldurd"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * o.Valid),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	var written []string
	write := func(name, kind string, der []byte, mode os.FileMode) error {
		path := filepath.Join(o.Dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), mode); err != nil {
			return err
		}
		written = append(written, path)
		return nil
	}
	if err := write("ca.pem", "CERTIFICATE", caDER, 0o644); err != nil {
		return nil, err
	}
	if err := writeKey(write, "ca-key.pem", caKey); err != nil {
		return nil, err
	}
	leaf := func(name, cn string, hosts []string, usage []x509.ExtKeyUsage, ou ...string) error {
		return issue(write, caCert, caKey, name, cn, hosts, usage, o.Valid, ou...)
	}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	for _, n := range o.Nodes {
		if err := leaf(n, n, append([]string{n}, o.Hosts...), both); err != nil {
			return nil, err
		}
	}
	if err := leaf("client", o.Client, nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, o.ClientRole); err != nil {
		return nil, err
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	if err := writeKey(write, "token-key.pem", priv); err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	if err := write("token-key.pub.pem", "PUBLIC KEY", pubDER, 0o644); err != nil {
		return nil, err
	}
	return written, nil
}

// issue writes name.pem and name-key.pem: a new key and a certificate for
// cn and hosts signed by the CA.
func issue(write func(name, kind string, der []byte, mode os.FileMode) error, caCert *x509.Certificate, caKey crypto.Signer,
	name, cn string, hosts []string, usage []x509.ExtKeyUsage, valid time.Duration, ou ...string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: cn, Organization: []string{"baldurd"}, OrganizationalUnit: ou},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(valid),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usage,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return err
	}
	if err := write(name+".pem", "CERTIFICATE", der, 0o644); err != nil {
		return err
	}
	return writeKey(write, name+"-key.pem", key)
}

// IssueNode writes a new key and node certificate (<node>.pem,
// <node>-key.pem in outDir) signed by the CA in caDir: a renewal. The
// files are written whole under temporary names and renamed, the key
// first, so a node that reloads between the two renames keeps its old pair
// (the new certificate does not match the old key) and takes the new pair
// at its next look.
func IssueNode(caDir, outDir, node string, hosts []string, valid time.Duration) error {
	caCert, caKey, err := loadCA(caDir)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(outDir, ".issue-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	write := func(name, kind string, der []byte, mode os.FileMode) error {
		return os.WriteFile(filepath.Join(tmp, name), pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), mode)
	}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	if err := issue(write, caCert, caKey, node, node, append([]string{node}, hosts...), both, valid); err != nil {
		return err
	}
	for _, f := range []string{node + "-key.pem", node + ".pem"} {
		if err := os.Rename(filepath.Join(tmp, f), filepath.Join(outDir, f)); err != nil {
			return err
		}
	}
	return nil
}

func loadCA(dir string) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		return nil, nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, fmt.Errorf("%s: ca.pem or ca-key.pem is not PEM", dir)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%s: ca-key.pem is not a signing key", dir)
	}
	return cert, signer, nil
}

func writeKey(write func(name, kind string, der []byte, mode os.FileMode) error, name string, key crypto.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return write(name, "PRIVATE KEY", der, 0o600)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}
