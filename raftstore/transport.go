package raftstore

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer is raft's TCP stream layer with an optional hook on outgoing
// connections. It tracks every connection so Close ends all of them, as a
// process exit would; raft's NetworkTransport alone leaves accepted
// connections to be closed by the peer. TLS is added here later without
// changing raft's transport.
type streamLayer struct {
	ln        net.Listener
	advertise net.Addr
	wrap      func(target string, c net.Conn) (net.Conn, error)

	serverTLS, clientTLS *tls.Config
	idle                 time.Duration

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func newStreamLayer(bind, advertise string, wrap func(string, net.Conn) (net.Conn, error)) (*streamLayer, error) {
	adv, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil {
		return nil, fmt.Errorf("resolve raft advertise address %q: %w", advertise, err)
	}
	if adv.IP == nil || adv.IP.IsUnspecified() {
		return nil, fmt.Errorf("raft advertise address %q is not dialable; set --raft-advertise", advertise)
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("listen for raft on %s: %w", bind, err)
	}
	return &streamLayer{ln: ln, advertise: adv, wrap: wrap, conns: map[net.Conn]struct{}{}}, nil
}

func (s *streamLayer) Addr() net.Addr { return s.advertise }

func (s *streamLayer) track(c net.Conn) (net.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	s.conns[c] = struct{}{}
	return &trackedConn{Conn: c, s: s}, nil
}

func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.ln.Accept()
	if err != nil {
		return nil, err
	}
	if s.idle > 0 {
		c = idleConn{Conn: c, timeout: s.idle}
	}
	if s.serverTLS != nil {
		c = tls.Server(c, s.serverTLS)
	}
	return s.track(c)
}

func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil {
		return nil, err
	}
	if s.wrap != nil {
		if c, err = s.wrap(string(addr), c); err != nil {
			return nil, err
		}
	}
	if s.clientTLS != nil {
		tc := tls.Client(c, s.clientTLS)
		_ = tc.SetDeadline(time.Now().Add(timeout))
		if err := tc.Handshake(); err != nil {
			tc.Close()
			return nil, fmt.Errorf("raft TLS handshake with %s: %w", addr, err)
		}
		_ = tc.SetDeadline(time.Time{})
		c = tc
	}
	return s.track(c)
}

func (s *streamLayer) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.conns = nil
	return s.ln.Close()
}

type trackedConn struct {
	net.Conn
	s    *streamLayer
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c.Conn)
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}

// idleConn closes a connection that receives nothing for timeout: each
// read pushes the deadline out.
type idleConn struct {
	net.Conn
	timeout time.Duration
}

func (c idleConn) Read(p []byte) (int, error) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	return c.Conn.Read(p)
}
