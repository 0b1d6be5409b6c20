package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/tlsconf"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
)

// tlsFiles are the node's certificates, keys and CAs (nil: not configured),
// each reloaded when its file changes.
type tlsFiles struct {
	api      *tlsconf.KeyPair
	clientCA *tlsconf.Pool
	peer     *tlsconf.KeyPair
	peerCA   *tlsconf.Pool
}

// loadTLS reads the configured files once, refusing a bad one by its flag.
func (s *Server) loadTLS() error {
	reloadFailed := func(flag string) func(error) {
		return func(err error) { s.log.Error("tls.reload_failed", "flag", flag, "err", err) }
	}
	var err error
	if s.cfg.APITLS() {
		if s.tls.api, err = tlsconf.LoadKeyPair(s.cfg.CertFile, s.cfg.KeyFile, reloadFailed("--cert-file")); err != nil {
			return fmt.Errorf("--cert-file/--key-file: %w", err)
		}
	}
	if s.cfg.ClientCAFile != "" {
		if s.tls.clientCA, err = tlsconf.LoadPool(s.cfg.ClientCAFile, reloadFailed("--client-ca-file")); err != nil {
			return fmt.Errorf("--client-ca-file: %w", err)
		}
	}
	if s.cfg.PeerTLS() {
		if s.tls.peer, err = tlsconf.LoadKeyPair(s.cfg.PeerCertFile, s.cfg.PeerKeyFile, reloadFailed("--peer-cert-file")); err != nil {
			return fmt.Errorf("--peer-cert-file/--peer-key-file: %w", err)
		}
		if s.tls.peerCA, err = tlsconf.LoadPool(s.cfg.PeerCAFile, reloadFailed("--peer-ca-file")); err != nil {
			return fmt.Errorf("--peer-ca-file: %w", err)
		}
		if cn := s.tls.peer.Certificate().Leaf.Subject.CommonName; cn != s.cfg.NodeID {
			return fmt.Errorf("--peer-cert-file: its common name is %q, not this node's id %q (peers admit a node by it)", cn, s.cfg.NodeID)
		}
	}
	if !s.cfg.APITLS() && !s.cfg.PeerTLS() && s.cfg.InsecurePlaintext {
		s.log.Warn("server.insecure_plaintext", "msg", "INSECURE: no TLS; anyone who reaches these ports can read and forge cluster traffic",
			"grpc_addr", s.cfg.GRPCAddr, "http_addr", s.cfg.HTTPAddr, "raft_addr", s.cfg.RaftAddr)
	}
	return nil
}

var errPeerCert = errors.New("not a member of this cluster")

// admitPeer accepts a node certificate (already verified against the peer
// CA) whose common name is a server of the Raft configuration. A node with
// no configuration yet (one being added) admits any node of the CA: the
// leader that adds it must reach it.
func (s *Server) admitPeer(leaf *x509.Certificate) error {
	if !isNodeCert(leaf) {
		return fmt.Errorf("certificate %q is not a node certificate (no server authentication usage): %w", leaf.Subject.CommonName, errPeerCert)
	}
	st := s.raftReady.Load()
	if st == nil {
		return nil // starting: raft is not up yet
	}
	servers, err := st.Servers()
	if err != nil || len(servers) == 0 {
		return nil
	}
	for _, sv := range servers {
		if sv.ID == leaf.Subject.CommonName {
			return nil
		}
	}
	return fmt.Errorf("node certificate %q: %w", leaf.Subject.CommonName, errPeerCert)
}

// grpcCredentials is the gRPC port's transport: TLS with the API
// certificate, client certificates optional and verified against the client
// CA (API callers) or the peer CA (other nodes).
func (s *Server) grpcCredentials() grpc.ServerOption {
	if s.tls.api == nil {
		return grpc.Creds(insecure.NewCredentials())
	}
	return grpc.Creds(credentials.NewTLS(s.apiTLS()))
}

func (s *Server) apiTLS() *tls.Config {
	var cas []*tlsconf.Pool
	for _, p := range []*tlsconf.Pool{s.tls.clientCA, s.tls.peerCA} {
		if p != nil {
			cas = append(cas, p)
		}
	}
	return tlsconf.Server(s.tls.api, false, nil, cas...)
}

// selfDial is how the REST gateway reaches this node's gRPC port: TLS that
// trusts exactly the certificate this node serves.
func (s *Server) selfDial() grpc.DialOption {
	if s.tls.api == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS12, InsecureSkipVerify: true, // pinned below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, s.tls.api.Certificate().Certificate[0]) {
				return errors.New("the gRPC port did not present this node's certificate")
			}
			return nil
		},
	}))
}

// peerDial is how this node reaches another node's gRPC port: with its
// node certificate, trusting a server certificate from the peer CA that
// names a cluster member.
func (s *Server) peerDial() grpc.DialOption {
	if s.tls.peer == nil {
		if s.tls.api != nil {
			// API TLS without peer TLS is refused by checkTLS; keep the
			// type checker honest.
			return grpc.WithTransportCredentials(credentials.NewTLS(tlsconf.Client(nil, nil, nil)))
		}
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(tlsconf.Client(s.tls.peer, s.tls.peerCA, s.admitPeer)))
}

// raftTLS is the Raft transport's mutual TLS: both ends present node
// certificates from the peer CA naming members.
func (s *Server) raftTLS() (server, client *tls.Config) {
	if s.tls.peer == nil {
		return nil, nil
	}
	return tlsconf.Server(s.tls.peer, true, s.admitPeer, s.tls.peerCA), tlsconf.Client(s.tls.peer, s.tls.peerCA, s.admitPeer)
}

// peerIdentity returns the node a call comes from, when it came over TLS
// with a node certificate from the peer CA naming a member ("" otherwise).
func (s *Server) peerIdentity(ctx context.Context) string {
	if name := s.nodeCertName(ctx); name != "" && s.isMember(name) {
		return name
	}
	return ""
}

// nodeCertName is the common name of the call's certificate when the peer
// CA verifies it (a node's certificate, member or not).
func (s *Server) nodeCertName(ctx context.Context) string {
	if s.tls.peerCA == nil {
		return ""
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return ""
	}
	leaf, err := s.tls.peerCA.VerifyCached(info.State)
	if err != nil || !isNodeCert(leaf) {
		return ""
	}
	return leaf.Subject.CommonName
}

// isNodeCert tells a node's certificate (it serves: server authentication
// usage, as `baldurctl certs init` issues them) from a client certificate
// the same CA may have signed for a person or a service.
func isNodeCert(leaf *x509.Certificate) bool {
	for _, u := range leaf.ExtKeyUsage {
		if u == x509.ExtKeyUsageServerAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return len(leaf.ExtKeyUsage) == 0 // no restriction: any usage
}

// isMember is admitPeer for a call's certificate, with the Raft
// configuration read at most every few seconds (it goes through Raft's
// main loop).
func (s *Server) isMember(id string) bool {
	s.members.mu.Lock()
	defer s.members.mu.Unlock()
	if time.Since(s.members.at) > 5*time.Second || s.members.ids == nil {
		st := s.raftReady.Load()
		if st == nil {
			return false
		}
		servers, err := st.Servers()
		if err != nil {
			return false
		}
		s.members.ids = map[string]bool{}
		for _, sv := range servers {
			s.members.ids[sv.ID] = true
		}
		s.members.at = time.Now()
	}
	return s.members.ids[id]
}

// clientCertIdentity is the caller a client certificate from the client CA
// names: its common name, with the role its organizational unit names
// (viewer when none does).
func (s *Server) clientCertIdentity(ctx context.Context) (identity, bool) {
	if s.tls.clientCA == nil {
		return identity{}, false
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return identity{}, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return identity{}, false
	}
	leaf, err := s.tls.clientCA.VerifyCached(info.State)
	if err != nil {
		return identity{}, false
	}
	id := identity{Name: leaf.Subject.CommonName, Role: pb.Role_VIEWER}
	if role, ok := s.cfg.ClientCertRoles[id.Name]; ok {
		id.Role, _ = parseRole(role)
		return id, true
	}
	for _, ou := range leaf.Subject.OrganizationalUnit {
		if r, err := parseRole(ou); err == nil {
			id.Role = max(id.Role, r)
		}
	}
	return id, true
}
