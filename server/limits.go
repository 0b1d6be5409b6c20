package server

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/baldurhq/baldurd/circuit"
	"github.com/baldurhq/baldurd/raftstore"
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

// watchers counts the node's open watch streams.
type watchers struct{ n atomic.Int64 }

// acquireWatcher admits one more watch stream, or refuses at --max-watchers.
func (s *Server) acquireWatcher() (release func(), err error) {
	if n := s.watchers.n.Add(1); s.cfg.MaxWatchers > 0 && n > int64(s.cfg.MaxWatchers) {
		s.watchers.n.Add(-1)
		return nil, s.limitError("watchers", "--max-watchers", s.cfg.MaxWatchers, "this node serves as many watch streams as it may; connect to another member")
	}
	return func() { s.watchers.n.Add(-1) }, nil
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
