package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/baldurhq/baldurd/circuit"
	"github.com/baldurhq/baldurd/raftstore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// Limits on what clients create, so a careless or hostile client cannot
// grow a node's memory, its metric series or the replicated state without
// bound. Each is a flag; a refusal is RESOURCE_EXHAUSTED (HTTP 429) naming
// the limit and its flag, and is counted in baldur_limit_refusals_total.

var errLimit = errors.New("server: limit reached")

// limitError is a refusal by a named limit.
func (s *Server) limitError(limit, flag string, max int, detail string) error {
	s.metrics.limitRefusals.WithLabelValues(limit).Inc()
	return fmt.Errorf("%w: %s (at most %d, %s)", errLimit, detail, max, flag)
}

// watchers counts the node's open watch streams, in all and per client
// connection.
type watchers struct {
	n       atomic.Int64
	mu      sync.Mutex
	perConn map[string]int
	// self holds the local addresses of the REST gateway's own connections
	// to this node's gRPC port: REST watchers share them (one per HTTP
	// request), so the per-connection limit does not apply there.
	self sync.Map
	// answered holds, per client connection whose report stream asked for
	// it (livenessHeader), when its last report was answered
	// (*atomic.Int64, Unix nanoseconds): its watch streams need no
	// heartbeats while reports are answered (watchLoop).
	answered sync.Map
	// reporters counts the open report streams (StreamOutcomes).
	reporters atomic.Int64
}

// livenessHeader on a StreamOutcomes call says the client counts answered
// reports as proof its watches are current (the Go SDK does), so the node
// may leave out the watch heartbeats of that connection while it answers.
const livenessHeader = "baldur-liveness"

// peerConn is the client connection a stream came on ("" for the REST
// gateway's own connections and for streams without a peer).
func (s *Server) peerConn(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	addr := p.Addr.String()
	if _, self := s.watchers.self.Load(addr); self {
		return ""
	}
	return addr
}

// openReportStream counts a report stream (idleSpread, reportSpread) and
// returns the clock it sets at each answer when the client asked for it
// (livenessHeader; nil when it did not), and a release for the stream's
// end.
func (s *Server) openReportStream(ctx context.Context) (answered *atomic.Int64, release func()) {
	s.watchers.reporters.Add(1)
	conn := s.peerConn(ctx)
	md, _ := metadata.FromIncomingContext(ctx)
	if conn == "" || !slices.Contains(md.Get(livenessHeader), "reports") {
		return nil, func() { s.watchers.reporters.Add(-1) }
	}
	at := new(atomic.Int64)
	s.watchers.answered.Store(conn, at)
	return at, func() {
		s.watchers.answered.CompareAndDelete(conn, at)
		s.watchers.reporters.Add(-1)
	}
}

// freshByReports reports whether conn's client had a report answered
// recently enough that its watch streams skip their heartbeats: within a
// heartbeat interval, plus the idle interval it was asked to hold quiet
// reports for (idleSpread). A client whose reports stop hears a
// heartbeat within two heartbeat intervals and the spread after its last
// answer.
func (s *Server) freshByReports(conn string) bool {
	if conn == "" {
		return false
	}
	v, ok := s.watchers.answered.Load(conn)
	return ok && time.Since(time.Unix(0, v.(*atomic.Int64).Load())) < s.heartbeatEvery()+s.idleSpread()
}

// heartbeatEvery is how often an idle watch stream hears from the node.
func (s *Server) heartbeatEvery() time.Duration {
	if s.cfg.WatchHeartbeat > 0 {
		return s.cfg.WatchHeartbeat
	}
	return watchHeartbeat
}

// idleSpread is how long the node asks instances to hold reports of
// successes only (ReportOutcomesResponse.idle_report_interval): the
// instances reporting to it divided by --idle-reports-per-second, so it
// takes about that many quiet reports a second however many report, at
// most a heartbeat interval (an instance's answers then keep its watches
// fresh). 0: no spreading.
func (s *Server) idleSpread() time.Duration {
	return s.spread(s.cfg.IdleReportsPerSecond, s.heartbeatEvery())
}

// reportSpread is how long the node asks instances to leave between any
// two reports (ReportOutcomesResponse.report_interval): the instances
// reporting to it divided by --reports-per-second, at most 1 s. While a
// breaker fails across a large fleet every instance has news each
// interval; this bounds what the node takes a second. 0: no spreading.
func (s *Server) reportSpread() time.Duration {
	return s.spread(s.cfg.ReportsPerSecond, time.Second)
}

// spread is the interval at which the instances reporting to this node
// make perSecond reports a second together, at most most (0: perSecond
// is 0, no spreading).
func (s *Server) spread(perSecond int, most time.Duration) time.Duration {
	if perSecond <= 0 {
		return 0
	}
	d := time.Duration(s.watchers.reporters.Load()) * time.Second / time.Duration(perSecond)
	return min(d, most)
}

// acquireWatcher admits one more watch stream, or refuses at --max-watchers
// or --max-watchers-per-connection.
func (s *Server) acquireWatcher(ctx context.Context) (release func(), err error) {
	if n := s.watchers.n.Add(1); s.cfg.MaxWatchers > 0 && n > int64(s.cfg.MaxWatchers) {
		s.watchers.n.Add(-1)
		return nil, s.limitError("watchers", "--max-watchers", s.cfg.MaxWatchers, "this node serves as many watch streams as it may; connect to another member")
	}
	conn := s.peerConn(ctx)
	if conn == "" || s.cfg.MaxWatchersPerConn <= 0 {
		return func() { s.watchers.n.Add(-1) }, nil
	}
	w := &s.watchers
	w.mu.Lock()
	if w.perConn == nil {
		w.perConn = map[string]int{}
	}
	if w.perConn[conn] >= s.cfg.MaxWatchersPerConn {
		w.mu.Unlock()
		w.n.Add(-1)
		return nil, s.limitError("watchers_per_connection", "--max-watchers-per-connection", s.cfg.MaxWatchersPerConn, "this connection has as many watch streams as it may")
	}
	w.perConn[conn]++
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		if w.perConn[conn]--; w.perConn[conn] <= 0 {
			delete(w.perConn, conn)
		}
		w.mu.Unlock()
		w.n.Add(-1)
	}, nil
}

// selfDialer dials this node's gRPC port for the REST gateway and
// remembers the connections' local addresses (watchers.self).
func (s *Server) selfDialer() grpc.DialOption {
	return grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		s.watchers.self.Store(c.LocalAddr().String(), true)
		return &selfConn{Conn: c, forget: func() { s.watchers.self.Delete(c.LocalAddr().String()) }}, nil
	})
}

type selfConn struct {
	net.Conn
	once   sync.Once
	forget func()
}

func (c *selfConn) Close() error {
	c.once.Do(c.forget)
	return c.Conn.Close()
}

// breakerCount is the number of breakers, read from the state at most
// once a second (registration checks it on every report batch).
type breakerCount struct {
	mu sync.Mutex
	n  int
	at time.Time
}

func (s *Server) breakers() int {
	s.breakerN.mu.Lock()
	defer s.breakerN.mu.Unlock()
	if time.Since(s.breakerN.at) > time.Second {
		n := 0
		_ = s.store.View(func(kv raftstore.KV) error {
			kv.Scan(circuit.BucketBreakers, nil, false, func(_, _ []byte) bool { n++; return true })
			return nil
		})
		s.breakerN.n, s.breakerN.at = n, time.Now()
	}
	return s.breakerN.n
}

// breakerRoom is how many breakers may still be registered.
func (s *Server) breakerRoom() int {
	if s.cfg.MaxBreakers <= 0 {
		return int(^uint(0) >> 1)
	}
	return max(0, s.cfg.MaxBreakers-s.breakers())
}

// connSet tracks a listener's open connections by remote address.
type connSet struct {
	mu    sync.Mutex
	conns map[string]net.Conn
}

type trackedListener struct {
	net.Listener
	set *connSet
}

func (l *trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	key := c.RemoteAddr().String()
	l.set.mu.Lock()
	if l.set.conns == nil {
		l.set.conns = map[string]net.Conn{}
	}
	l.set.conns[key] = c
	l.set.mu.Unlock()
	return &trackedConn{Conn: c, forget: func() {
		l.set.mu.Lock()
		if l.set.conns[key] == c {
			delete(l.set.conns, key)
		}
		l.set.mu.Unlock()
	}}, nil
}

type trackedConn struct {
	net.Conn
	once   sync.Once
	forget func()
}

func (c *trackedConn) Close() error {
	c.once.Do(c.forget)
	return c.Conn.Close()
}

// close closes the connection from addr, if it is open.
func (s *connSet) close(addr string) bool {
	s.mu.Lock()
	c := s.conns[addr]
	s.mu.Unlock()
	if c == nil {
		return false
	}
	return c.Close() == nil
}
