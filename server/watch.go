package server

import (
	"context"
	"sync"
	"time"

	"github.com/baldurhq/baldurd/raftstore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// hub wakes watchers when the local FSM applies a batch. Watchers re-read
// the state and send what changed since the revision they last sent, so a
// slow watcher never blocks the FSM and never misses a change: it only
// coalesces several into one message.
type hub struct {
	mu     sync.Mutex
	ch     chan struct{}
	closed bool
}

func newHub() *hub { return &hub{ch: make(chan struct{})} }

// notify wakes every current waiter.
func (h *hub) notify() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	close(h.ch)
	h.ch = make(chan struct{})
}

// wait returns a channel closed at the next notify (or at close). Take it
// before reading state, so a change between the read and the wait is seen.
func (h *hub) wait() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ch
}

// close wakes everyone for good; watchers then see stopped.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.closed = true
		close(h.ch)
	}
}

func (h *hub) isClosed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}

// watchHeartbeat is how often an idle watch stream sends an empty message,
// so clients can tell a quiet stream from a dead one.
const watchHeartbeat = 3 * time.Second

// watchLoop drives a revisioned watch stream. build reads the local state:
// with since == 0 it returns a full snapshot, otherwise what changed after
// since (ok false when nothing did). A revision this node's history cannot
// continue (newer than its state, or from before a snapshot restore) starts
// over with a snapshot. Idle streams get heartbeat(applied) every
// watchHeartbeat.
func watchLoop[M any](s *Server, ctx context.Context, from uint64,
	build func(kv raftstore.KV, since, applied uint64) (M, bool),
	send func(M) error, heartbeat func(applied uint64) error) error {
	rev := from
	restores := s.store.Restores()
	for {
		wake := s.hub.wait()
		if s.hub.isClosed() {
			return status.Error(codes.Unavailable, "node is shutting down; reconnect to another member")
		}
		var (
			msg     M
			ok      bool
			applied uint64
		)
		_ = s.store.View(func(kv raftstore.KV) error {
			applied = kv.AppliedIndex()
			if r := s.store.Restores(); rev > applied || r != restores {
				rev, restores = 0, r
			}
			msg, ok = build(kv, rev, applied)
			return nil
		})
		if ok {
			if err := send(msg); err != nil {
				return err
			}
		}
		rev = applied
		timer := time.NewTimer(watchHeartbeat)
		select {
		case <-wake:
		case <-timer.C:
			if err := heartbeat(rev); err != nil {
				return err
			}
		case <-ctx.Done():
			timer.Stop()
			return nil
		}
		timer.Stop()
	}
}
