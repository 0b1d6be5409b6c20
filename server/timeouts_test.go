package server_test

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/server"
)

// Connections that send too slowly, sit idle, or open the Raft port and say
// nothing are closed by the timeouts.
func TestIdleAndSlowConnectionsAreClosed(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1, testcluster.WithConfig(func(_ int, cfg *server.Config) {
		cfg.HTTPReadTimeout, cfg.HTTPIdleTimeout, cfg.RaftIdleTimeout = time.Second, time.Second, time.Second
	}))
	closedWithin := func(conn net.Conn, d time.Duration) bool {
		_ = conn.SetReadDeadline(time.Now().Add(d))
		_, err := io.Copy(io.Discard, conn) // returns at EOF (closed) or the deadline
		ne, timedOut := err.(net.Error)
		return !(timedOut && ne.Timeout())
	}
	dial := func(addr string) net.Conn {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}

	// A body that never finishes arriving.
	slow := dial(c.Nodes[0].HTTPAddr)
	_, _ = io.WriteString(slow, "POST /v1/emergency:trigger HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"level\":")
	if !closedWithin(slow, 5*time.Second) {
		t.Fatal("a slow body upload was not cut off")
	}

	// A keep-alive connection left idle after a request.
	idle := dial(c.Nodes[0].HTTPAddr)
	_, _ = io.WriteString(idle, "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
	line, err := bufio.NewReader(idle).ReadString('\n')
	if err != nil || !strings.Contains(line, "200") {
		t.Fatalf("livez: %q %v", line, err)
	}
	if !closedWithin(idle, 5*time.Second) {
		t.Fatal("an idle keep-alive connection was not closed")
	}

	// A Raft connection that says nothing.
	raftConn := dial(c.Nodes[0].RaftAddr)
	if !closedWithin(raftConn, 5*time.Second) {
		t.Fatal("a silent Raft connection was not closed")
	}
}
