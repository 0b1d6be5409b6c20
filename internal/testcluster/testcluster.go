// Package testcluster runs N-node baldurd clusters inside a test process:
// real nodes (gRPC, HTTP, Raft over TCP, bbolt) on 127.0.0.1 ports chosen
// at start, each with its own t.TempDir(), and helpers to kill, restart and
// partition them.
//
// Partitions cut Raft links only (node-to-node API forwarding still flows),
// which is what decides leadership and replication.
package testcluster

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/audit"
	"github.com/baldurhq/baldurd/raftstore"
	"github.com/baldurhq/baldurd/server"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
)

// Timing used by test clusters: fast, but slow enough that a busy 2-core
// machine running fsyncs and GC does not cause spurious elections.
var Timing = raftstore.Timing{
	Heartbeat:   300 * time.Millisecond,
	Election:    300 * time.Millisecond,
	LeaderLease: 150 * time.Millisecond,
	Commit:      10 * time.Millisecond,
}

// Node is one member.
type Node struct {
	ID       string
	Dir      string
	RaftAddr string
	GRPCAddr string
	HTTPAddr string

	c      *Cluster
	mu     sync.Mutex
	srv    *server.Server
	cancel context.CancelFunc
	done   chan error
}

// Cluster is a set of nodes sharing one fault layer and one clock.
type Cluster struct {
	t      testing.TB
	Nodes  []*Node
	Clock  *Clock
	faults *faults
	opts   options
}

// Clock is the time every node of a cluster stamps into commands: real
// time plus an offset a test can advance, so minute-long TTLs can be
// tested without waiting.
type Clock struct{ offset atomic.Int64 }

// Now is the cluster's current time.
func (c *Clock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// Advance moves the cluster's time forward.
func (c *Clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

type options struct {
	configure func(i int, cfg *server.Config)
}

// Option customises a cluster.
type Option func(*options)

// WithConfig lets a test adjust each node's configuration before start.
func WithConfig(f func(i int, cfg *server.Config)) Option {
	return func(o *options) { o.configure = f }
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("reserve port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// New starts an n-node cluster bootstrapped with --peers and waits for a
// leader. Nodes are stopped at test cleanup.
func New(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	c := &Cluster{t: t, faults: newFaults(), Clock: &Clock{}}
	for _, o := range opts {
		o(&c.opts)
	}
	// Raft ports are reserved and released before the nodes bind them, so
	// another test process can take one in between: start over on fresh
	// ports and directories when that happens.
	for attempt := 1; ; attempt++ {
		err := c.startNodes(n)
		if err == nil {
			break
		}
		c.Stop()
		if attempt == 5 || !(errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")) {
			t.Fatalf("start cluster (attempt %d): %v", attempt, err)
		}
	}
	t.Cleanup(c.Stop)
	c.WaitForLeader(10 * time.Second)
	c.WaitForMembers(10 * time.Second)
	return c
}

// WaitForMembers waits until every running node has published its API
// addresses and every running node has applied that table.
func (c *Cluster) WaitForMembers(timeout time.Duration) {
	c.t.Helper()
	if !Eventually(timeout, func() bool {
		for _, n := range c.Nodes {
			srv := n.Server()
			if srv == nil {
				continue
			}
			view, err := srv.ClusterView()
			if err != nil {
				return false
			}
			for _, m := range view.Members {
				if m.GrpcAddr == "" {
					return false
				}
			}
		}
		return true
	}) {
		c.t.Fatalf("members did not all register within %v", timeout)
	}
}

// startNodes creates and starts n nodes on fresh ports and directories.
func (c *Cluster) startNodes(n int) error {
	c.Nodes, c.faults = nil, newFaults()
	var peers []string
	for i := 0; i < n; i++ {
		nd := &Node{ID: fmt.Sprintf("n%d", i+1), Dir: c.t.TempDir(), RaftAddr: freeAddr(c.t), GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", c: c}
		c.faults.name(nd.RaftAddr, nd.ID)
		c.Nodes = append(c.Nodes, nd)
		peers = append(peers, nd.ID+"="+nd.RaftAddr)
	}
	for i, nd := range c.Nodes {
		if err := nd.start(i, strings.Join(peers, ",")); err != nil {
			return fmt.Errorf("start %s: %w", nd.ID, err)
		}
	}
	return nil
}

func (n *Node) start(i int, peers string) error {
	cfg := server.Defaults()
	cfg.NodeID, cfg.DataDir = n.ID, n.Dir
	cfg.GRPCAddr, cfg.HTTPAddr, cfg.RaftAddr = n.GRPCAddr, n.HTTPAddr, n.RaftAddr
	cfg.Peers = peers
	cfg.Timing = Timing
	cfg.WALSegmentSize = 4 << 20
	cfg.PromoteStabilization = 300 * time.Millisecond
	cfg.LogLevel = "error"
	cfg.WrapConn = n.c.faults.wrap(n.ID)
	cfg.Now = n.c.Clock.Now
	if n.c.opts.configure != nil {
		n.c.opts.configure(i, &cfg)
	}
	srv, err := server.New(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	n.mu.Lock()
	n.srv, n.cancel, n.done = srv, cancel, done
	// Keep the ports across restarts so the member table stays valid.
	n.GRPCAddr, n.HTTPAddr = srv.GRPCAddr(), srv.HTTPAddr()
	n.mu.Unlock()
	return nil
}

// Server returns the running server, or nil when the node is down.
func (n *Node) Server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// Store is the node's Raft store (nil when down).
func (n *Node) Store() *raftstore.Store {
	if s := n.Server(); s != nil {
		return s.Store()
	}
	return nil
}

// Running reports whether the node is up.
func (n *Node) Running() bool { return n.Server() != nil }

func (n *Node) stop(transfer bool) {
	n.mu.Lock()
	srv, cancel, done := n.srv, n.cancel, n.done
	n.srv = nil
	n.mu.Unlock()
	if srv == nil {
		return
	}
	if transfer {
		cancel() // Run's shutdown path: leadership transfer first
		<-done
		return
	}
	srv.Close(false)
	cancel()
	<-done
}

// Kill stops node i abruptly: no leadership transfer.
func (c *Cluster) Kill(i int) { c.Nodes[i].stop(false) }

// Shutdown stops node i gracefully (as SIGTERM would).
func (c *Cluster) Shutdown(i int) { c.Nodes[i].stop(true) }

// Restart starts a stopped node again on the same addresses and data.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	var peers []string
	for _, nd := range c.Nodes {
		peers = append(peers, nd.ID+"="+nd.RaftAddr)
	}
	// Restarting right after a stop can find the old port in TIME_WAIT;
	// listeners set SO_REUSEADDR, so only an in-use port fails, briefly.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := c.Nodes[i].start(i, strings.Join(peers, ","))
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("restart %s: %v", c.Nodes[i].ID, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops every node.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		n.stop(false)
	}
}

// Leader returns the running node that currently leads, or nil.
func (c *Cluster) Leader() *Node {
	for _, n := range c.Nodes {
		if s := n.Store(); s != nil && s.Ready() {
			return n
		}
	}
	return nil
}

// LeaderIndex returns the index of the leader, or -1.
func (c *Cluster) LeaderIndex() int {
	l := c.Leader()
	for i, n := range c.Nodes {
		if n == l {
			return i
		}
	}
	return -1
}

// Followers returns the running nodes that are not the leader.
func (c *Cluster) Followers() []*Node {
	var out []*Node
	l := c.Leader()
	for _, n := range c.Nodes {
		if n != l && n.Running() {
			out = append(out, n)
		}
	}
	return out
}

// WaitForLeader waits until some node leads and is ready, and every
// running node knows a leader.
func (c *Cluster) WaitForLeader(timeout time.Duration) *Node {
	c.t.Helper()
	var l *Node
	ok := Eventually(timeout, func() bool {
		l = c.Leader()
		if l == nil {
			return false
		}
		for _, n := range c.Nodes {
			if s := n.Store(); s != nil {
				if id, _ := s.Leader(); id == "" {
					return false
				}
			}
		}
		return true
	})
	if !ok {
		c.t.Fatalf("no leader within %v", timeout)
	}
	return l
}

// WaitForApplied waits until every running node has applied index.
func (c *Cluster) WaitForApplied(index uint64, timeout time.Duration) {
	c.t.Helper()
	if !Eventually(timeout, func() bool {
		for _, n := range c.Nodes {
			if s := n.Store(); s != nil && s.AppliedIndex() < index {
				return false
			}
		}
		return true
	}) {
		c.t.Fatalf("not every node applied index %d within %v", index, timeout)
	}
}

// Partition cuts Raft links between the given groups of node indexes.
// Nodes not named in any group stay connected to everyone.
func (c *Cluster) Partition(groups ...[]int) {
	for gi, a := range groups {
		for gj, b := range groups {
			if gi == gj {
				continue
			}
			for _, x := range a {
				for _, y := range b {
					c.faults.cut(c.Nodes[x].ID, c.Nodes[y].ID)
				}
			}
		}
	}
}

// Heal restores every link.
func (c *Cluster) Heal() { c.faults.heal() }

// Eventually polls cond every 10 ms until it holds or timeout passes.
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// faults cuts Raft connections between named nodes.
type faults struct {
	mu    sync.Mutex
	names map[string]string // raft addr → node id
	cuts  map[[2]string]bool
	conns map[[2]string][]net.Conn
}

func newFaults() *faults {
	return &faults{names: map[string]string{}, cuts: map[[2]string]bool{}, conns: map[[2]string][]net.Conn{}}
}

func (f *faults) name(addr, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.names[addr] = id
}

var errCut = errors.New("testcluster: link cut")

func (f *faults) wrap(self string) func(string, net.Conn) (net.Conn, error) {
	return func(target string, c net.Conn) (net.Conn, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		key := [2]string{self, f.names[target]}
		if f.cuts[key] {
			c.Close()
			return nil, errCut
		}
		f.conns[key] = append(f.conns[key], c)
		return c, nil
	}
}

func (f *faults) cut(a, b string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, key := range [][2]string{{a, b}, {b, a}} {
		f.cuts[key] = true
		for _, c := range f.conns[key] {
			c.Close()
		}
		delete(f.conns, key)
	}
}

func (f *faults) heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cuts = map[[2]string]bool{}
}

// TamperAuditRecord rewrites one field of audit record seq directly in the
// state file of a stopped node, as an attacker with disk access would.
func (c *Cluster) TamperAuditRecord(i int, seq uint64, field string, value any) {
	c.t.Helper()
	if c.Nodes[i].Running() {
		c.t.Fatalf("TamperAuditRecord: %s is running; Kill it first", c.Nodes[i].ID)
	}
	db, err := bolt.Open(filepath.Join(c.Nodes[i].Dir, "state.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		c.t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(audit.Bucket)
		key := binary.BigEndian.AppendUint64(nil, seq)
		var rec map[string]any
		if err := json.Unmarshal(b.Get(key), &rec); err != nil {
			return fmt.Errorf("audit record %d: %w", seq, err)
		}
		rec[field] = value
		raw, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		return b.Put(key, raw)
	})
	if err != nil {
		c.t.Fatalf("TamperAuditRecord: %v", err)
	}
}
