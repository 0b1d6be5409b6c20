package raftstore

import (
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer is raft's TCP stream layer with an optional hook on outgoing
// connections. TLS is added here later without changing raft's transport.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	wrap      func(target string, c net.Conn) (net.Conn, error)
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
	return &streamLayer{Listener: ln, advertise: adv, wrap: wrap}, nil
}

func (s *streamLayer) Addr() net.Addr { return s.advertise }

func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil || s.wrap == nil {
		return c, err
	}
	return s.wrap(string(addr), c)
}
