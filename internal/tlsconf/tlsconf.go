// Package tlsconf builds the TLS configurations of baldurd's three ports
// and of its clients from PEM files that are reloaded when they change, so
// certificates rotate without a restart. It also writes a CA and
// certificates for a test or small cluster (Init).
//
// Imports: the standard library only.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// recheck bounds how often a file's modification time is looked at.
const recheck = time.Second

// fileStamp identifies a version of a file.
type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.ModTime(), fi.Size()}, nil
}

// reloading holds a value loaded from files, loaded again when one of them
// changes. A version that fails to load is skipped (the last good one
// stays) and reported by OnError.
type reloading[T any] struct {
	files []string
	load  func() (T, error)

	mu      sync.Mutex
	value   T
	stamps  []fileStamp
	checked time.Time
	onError func(error)
}

func newReloading[T any](load func() (T, error), onError func(error), files ...string) (*reloading[T], error) {
	r := &reloading[T]{files: files, load: load, onError: onError}
	v, err := load()
	if err != nil {
		return nil, err
	}
	r.value, r.stamps, r.checked = v, r.currentStamps(), time.Now()
	return r, nil
}

func (r *reloading[T]) currentStamps() []fileStamp {
	out := make([]fileStamp, len(r.files))
	for i, f := range r.files {
		out[i], _ = stampOf(f)
	}
	return out
}

func (r *reloading[T]) get() T {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) < recheck {
		return r.value
	}
	r.checked = time.Now()
	stamps := r.currentStamps()
	changed := false
	for i := range stamps {
		if stamps[i] != r.stamps[i] {
			changed = true
		}
	}
	if !changed {
		return r.value
	}
	v, err := r.load()
	if err != nil {
		// A half-written pair (the certificate replaced, the key not yet)
		// fails here; the next look loads the finished pair.
		if r.onError != nil {
			r.onError(err)
		}
		return r.value
	}
	r.value, r.stamps = v, stamps
	return v
}

// KeyPair is a certificate and its key.
type KeyPair struct{ r *reloading[*tls.Certificate] }

// LoadKeyPair reads a PEM certificate (chain) and key; onError (may be nil)
// hears about versions that fail to load later.
func LoadKeyPair(certFile, keyFile string, onError func(error)) (*KeyPair, error) {
	r, err := newReloading(func() (*tls.Certificate, error) {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("%s, %s: %w", certFile, keyFile, err)
		}
		if c.Leaf == nil && len(c.Certificate) > 0 {
			c.Leaf, _ = x509.ParseCertificate(c.Certificate[0])
		}
		return &c, nil
	}, onError, certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &KeyPair{r}, nil
}

// Certificate is the current certificate.
func (k *KeyPair) Certificate() *tls.Certificate { return k.r.get() }

// Pool is a file of PEM CA certificates.
type Pool struct {
	r *reloading[*x509.CertPool]

	// verified remembers chains already checked, by leaf certificate
	// (every call on a connection carries the same one), for a short
	// while so a reloaded pool takes effect.
	mu       sync.Mutex
	verified map[*x509.Certificate]verdict
}

type verdict struct {
	err   error
	until time.Time
}

// verdictTTL bounds how long a chain's verdict is reused.
const verdictTTL = 10 * time.Second

// VerifyCached is Verify, remembering the verdict for a leaf for a few
// seconds: a server checks the same connection's certificate on every call.
func (p *Pool) VerifyCached(cs tls.ConnectionState) (*x509.Certificate, error) {
	if len(cs.PeerCertificates) == 0 {
		return nil, errors.New("no certificate presented")
	}
	leaf, now := cs.PeerCertificates[0], time.Now()
	p.mu.Lock()
	v, ok := p.verified[leaf]
	p.mu.Unlock()
	if ok && now.Before(v.until) {
		return leaf, v.err
	}
	_, err := p.Verify(cs)
	p.mu.Lock()
	if p.verified == nil || len(p.verified) > 4096 {
		p.verified = map[*x509.Certificate]verdict{}
	}
	p.verified[leaf] = verdict{err: err, until: now.Add(verdictTTL)}
	p.mu.Unlock()
	return leaf, err
}

// LoadPool reads a PEM file of CA certificates.
func LoadPool(file string, onError func(error)) (*Pool, error) {
	r, err := newReloading(func() (*x509.CertPool, error) {
		raw, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		p := x509.NewCertPool()
		if !p.AppendCertsFromPEM(raw) {
			return nil, fmt.Errorf("%s: no PEM certificate", file)
		}
		return p, nil
	}, onError, file)
	if err != nil {
		return nil, err
	}
	return &Pool{r: r}, nil
}

// CertPool is the current pool.
func (p *Pool) CertPool() *x509.CertPool { return p.r.get() }

// Verify checks that the chain the other side presented leads to a
// certificate in p (for any key usage both sides of a peer link need) and
// returns the leaf.
func (p *Pool) Verify(cs tls.ConnectionState) (*x509.Certificate, error) {
	if len(cs.PeerCertificates) == 0 {
		return nil, errors.New("no certificate presented")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: p.CertPool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, err
	}
	return leaf, nil
}

// Server is the TLS configuration of a port serving kp. Client
// certificates are asked for and verified against the pools given (any of
// them), optional unless require is set; verify, if set, runs on the
// verified leaf (say, to admit only cluster members).
func Server(kp *KeyPair, require bool, verify func(leaf *x509.Certificate) error, clientCAs ...*Pool) *tls.Config {
	// NextProtos on the base config too: net/http turns HTTP/2 on for a TLS
	// listener only when it finds "h2" there.
	base := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*kp.Certificate()}, NextProtos: []string{"h2", "http/1.1"}}
		if len(clientCAs) == 0 {
			return c, nil
		}
		// Verified by hand below, against the pools as they are now.
		c.ClientAuth = tls.RequestClientCert
		if require {
			c.ClientAuth = tls.RequireAnyClientCert
		}
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil // optional, and not given
			}
			var leaf *x509.Certificate
			var err error
			for _, p := range clientCAs {
				if leaf, err = p.Verify(cs); err == nil {
					break
				}
			}
			if err != nil {
				return fmt.Errorf("client certificate: %w", err)
			}
			if verify != nil {
				return verify(leaf)
			}
			return nil
		}
		return c, nil
	}
	return base
}

// Client is the TLS configuration of a client presenting kp (nil for
// none) that trusts a server whose chain leads to roots (nil: the system's
// roots). Without verify the server's certificate must name the host
// dialled, as usual; with verify (peers, which are named by their
// certificate rather than by the address dialled) verify decides.
func Client(kp *KeyPair, roots *Pool, verify func(leaf *x509.Certificate) error) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if kp != nil {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return kp.Certificate(), nil }
	}
	if roots == nil {
		return c
	}
	// The pool may change: verify by hand against the current one. Peers
	// are named by their certificate (checked by verify), not by the
	// address dialled.
	c.InsecureSkipVerify = true
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		leaf, err := roots.Verify(cs)
		if err != nil {
			return fmt.Errorf("server certificate: %w", err)
		}
		if verify != nil {
			return verify(leaf)
		}
		return leaf.VerifyHostname(cs.ServerName)
	}
	return c
}
