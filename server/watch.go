package server

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/config"
	"github.com/baldurhq/baldurd/raftstore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// topics name what a batch of commands changed, so watchers wake only for
// their own domain: a flood of DLQ stores does not wake every circuit and
// emergency watcher to re-read state that did not change.
type topics uint8

const (
	topicEmergency topics = 1 << iota
	topicCircuit
	topicCoordination
	topicDLQ
	topicCluster
	topicConfig
	topicCanary
	numTopics = iota
	topicAll  = topics(1<<numTopics - 1)
)

// topicOf is the topic a command's body changes (0: none a watcher reads).
func topicOf(cmd *raftv1.Command) topics {
	switch cmd.Body.(type) {
	case *raftv1.Command_EmergencyTrigger, *raftv1.Command_EmergencyRelease, *raftv1.Command_EmergencyExpire,
		*raftv1.Command_EmergencyStep, *raftv1.Command_EmergencyConfig:
		return topicEmergency
	case *raftv1.Command_Circuit:
		if cmd.GetCircuit().GetOp() == raftv1.CircuitCommand_KILL_SWITCH {
			// The system control reaches SDKs with the configuration too.
			return topicCircuit | topicConfig | topicEmergency
		}
		return topicCircuit
	case *raftv1.Command_Governance:
		return topicConfig | topicEmergency
	case *raftv1.Command_Coordination:
		return topicCoordination
	case *raftv1.Command_Dlq:
		return topicDLQ
	case *raftv1.Command_MemberUpsert, *raftv1.Command_MemberRemove:
		return topicCluster
	case *raftv1.Command_ConfigSet:
		// SDKs receive the configuration on their emergency watch; breakers
		// on the old circuit defaults follow the new ones.
		t := topicConfig | topicEmergency
		if cmd.GetConfigSet().GetSection() == config.CircuitDefaults {
			t |= topicCircuit
		}
		return t
	case *raftv1.Command_Canary:
		// Rollouts reach SDKs with the configuration; the last promotion
		// sets a section (breakers may follow new circuit defaults).
		return topicCanary | topicConfig | topicEmergency | topicCircuit
	}
	return 0
}

// hub wakes watchers when the local FSM applies a batch that changed their
// topic. Watchers re-read the state and send what changed since the
// revision they last sent, so a slow watcher never blocks the FSM and never
// misses a change: it only coalesces several into one message.
type hub struct {
	mu     sync.Mutex
	ch     [numTopics]chan struct{}
	gen    [numTopics]atomic.Uint64 // notifies so far, per topic
	closed bool
}

func newHub() *hub {
	h := &hub{}
	for i := range h.ch {
		h.ch[i] = make(chan struct{})
	}
	return h
}

// notify wakes every current waiter on the topics in t.
func (h *hub) notify(t topics) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	for i := range h.ch {
		if t&(1<<i) != 0 {
			h.gen[i].Add(1)
			close(h.ch[i])
			h.ch[i] = make(chan struct{})
		}
	}
}

// wait returns a channel closed at the next notify of topic t (a single
// topic) or at close. Take it before reading state, so a change between the
// read and the wait is seen.
func (h *hub) wait(t topics) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range h.ch {
		if t == 1<<i {
			return h.ch[i]
		}
	}
	panic(fmt.Sprintf("server: wait on %b: one topic at a time", t))
}

// close wakes everyone for good; watchers then see stopped.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.closed = true
		for _, ch := range h.ch {
			close(ch)
		}
	}
}

func (h *hub) isClosed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}

// watchHeartbeat is how often an idle watch stream sends an empty message,
// so clients can tell a quiet stream from a dead one (Config.WatchHeartbeat
// overrides it).
const watchHeartbeat = 3 * time.Second

// topicIndex is the position of a single topic t.
func topicIndex(t topics) int {
	for i := 0; i < numTopics; i++ {
		if t == 1<<i {
			return i
		}
	}
	panic(fmt.Sprintf("server: topic %b: one topic at a time", t))
}

// watchLoop drives a revisioned watch stream of one topic. build reads the local state:
// with since == 0 it returns a full snapshot, otherwise what changed after
// since (ok false when nothing did). A revision this node's history cannot
// continue (newer than its state, or from before a snapshot restore) starts
// over with a snapshot. An idle stream gets heartbeat(rev) every
// watchHeartbeat, when it returns ok, unless the client's reports on the
// same connection were answered within that time and it asked for them to
// count (livenessHeader): an instance that reports keeps its watches
// fresh with the answers, and its idle watches cost no message.
//
// Streams with the same view (a name for their filter; "" for a build
// that depends on more than the state, which is never shared) at the same
// revision share one encoded message (watch_frames.go): build runs once
// per view and revision, not once per stream; so do their heartbeats. send
// is the stream's SendMsg.
//
// The stream's own goroutine sends, one message at a time: while a send
// waits for the client's flow-control window, changes are not queued but
// coalesce (the next message, built when the send completes, covers
// everything since the last one delivered), so a watcher that does not
// read holds one message and its window. A send still waiting after
// --watch-send-timeout drops the stream (RESOURCE_EXHAUSTED,
// WATCHER_TOO_SLOW) and closes its connection, which ends the send. A
// message costs the node one wake of this goroutine and one of the
// connection's writer: at 1,000s of streams per node that, and the write
// itself, is the fan-out's cost.
func watchLoop[M proto.Message](s *Server, ctx context.Context, topic topics, view string, from uint64,
	build func(kv raftstore.KV, since, applied uint64) (M, bool),
	send func(any) error, heartbeat func(rev uint64) (proto.Message, bool)) error {
	release, err := s.acquireWatcher(ctx)
	if err != nil {
		return err
	}
	defer release()
	rev := from
	restores := s.store.Restores()
	// dirty: the topic may have changed since the last read of the state
	// (a heartbeat does not make it so: re-reading 10,000 breakers after
	// each one is what an idle watcher must not do).
	dirty := true
	// wake is kept until it fires; a new one is taken, before the state is
	// read, only after the last one fired, so a change during a send is
	// seen on the next turn.
	var wake <-chan struct{}
	ti := topicIndex(topic)
	frames, beats := s.frames[ti], s.beats[ti]
	heartbeatEvery := s.heartbeatEvery()
	deliver := func(f *frame) error { return s.sendWithin(ctx, send, f, rev) }
	conn := s.peerConn(ctx)
	timer := time.NewTimer(heartbeatEvery)
	defer timer.Stop()
	for {
		if wake == nil {
			wake = s.hub.wait(topic)
		}
		if s.hub.isClosed() {
			return status.Error(codes.Unavailable, "node is shutting down; reconnect to another member")
		}
		if dirty {
			dirty = false
			var (
				f       *frame
				ok      bool
				applied uint64
				found   bool
				err     error
			)
			if view != "" {
				// Another stream built this revision's message: no read
				// of the state at all.
				applied = s.store.AppliedIndex()
				if r := s.store.Restores(); r == restores && rev < applied {
					f, ok, err, found = frames.peek(frameKey{view: view, since: rev, applied: applied}, r)
				}
			}
			if !found {
				err = s.store.View(func(kv raftstore.KV) error {
					applied = kv.AppliedIndex()
					if r := s.store.Restores(); rev > applied || r != restores {
						rev, restores = 0, r
					}
					mk := func() (proto.Message, bool) { return build(kv, rev, applied) }
					var err error
					if view == "" {
						f, err = encodeFrame(mk)
						ok = f != nil
						s.metrics.watchBuilds.Inc()
					} else {
						f, ok, err = frames.get(frameKey{view: view, since: rev, applied: applied}, restores, mk)
					}
					return err
				})
			}
			if err != nil {
				return err
			}
			if ok {
				if err := deliver(f); err != nil {
					return err
				}
				timer.Reset(heartbeatEvery) // a heartbeat follows a quiet interval
			}
			rev = applied
		}
		select {
		case <-wake:
			dirty, wake = true, nil
		case <-timer.C:
			if s.freshByReports(conn) {
				// The client's reports on this connection are answered:
				// they tell it this stream is current.
				timer.Reset(heartbeatEvery)
				continue
			}
			mk := func() (proto.Message, bool) { return heartbeat(rev) }
			var f *frame
			var err error
			if view != "" {
				f, err = beats.get(beatKey{rev: rev, gen: s.hub.gen[ti].Load(), restores: restores}, mk)
			} else {
				f, err = encodeFrame(mk)
			}
			if err == nil && f != nil {
				err = deliver(f)
			}
			if err != nil {
				return err
			}
			timer.Reset(heartbeatEvery)
		case <-ctx.Done():
			return nil
		}
	}
}

// sendWithin sends f on a watch stream. A send the client has not taken
// after --watch-send-timeout drops the stream: its connection is closed
// (the only way to end a send that waits for a window the client does not
// open), and the handler returns WATCHER_TOO_SLOW.
func (s *Server) sendWithin(ctx context.Context, send func(any) error, f *frame, rev uint64) error {
	if s.cfg.WatchSendTimeout <= 0 {
		return send(f)
	}
	var late atomic.Bool
	watchdog := time.AfterFunc(s.cfg.WatchSendTimeout, func() {
		late.Store(true)
		s.metrics.watchersDropped.Inc()
		s.disconnectStuck(ctx)
	})
	err := send(f)
	if watchdog.Stop() || !late.Load() {
		return err
	}
	return withDetails(codes.ResourceExhausted, "WATCHER_TOO_SLOW",
		fmt.Sprintf("the client took no message for %v (--watch-send-timeout); watch again from revision %d", s.cfg.WatchSendTimeout, rev))
}

// disconnectStuck closes the connection of a gRPC client whose watch
// stream is being dropped: the stream's send waits for a flow-control
// window the client does not open, and only closing the connection ends it
// (the client reconnects and watches again from its revision). REST
// watchers share the gateway's own connection, which stays; a REST client
// that stops reading fails its HTTP write deadline, which ends the send.
func (s *Server) disconnectStuck(ctx context.Context) {
	addr := s.peerConn(ctx)
	if addr == "" {
		return
	}
	if s.grpcConns.close(addr) {
		s.log.Warn("watch.client_disconnected", "remote", addr, "why", "a watch stream took no message for --watch-send-timeout")
	}
}
