package raftstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	bolt "go.etcd.io/bbolt"
)

const (
	timeoutOpen    = time.Second
	enqueueTimeout = 10 * time.Second
	// MaxEntrySize caps one command (Vault and etcd use about 1 MiB).
	MaxEntrySize = 1 << 20
)

// Errors returned by Store. Callers map them to API errors.
var (
	ErrNotLeader       = errors.New("raftstore: not the leader")
	ErrNoLeader        = errors.New("raftstore: no leader elected")
	ErrNotReady        = errors.New("raftstore: leader not ready for consistent reads yet")
	ErrIndeterminate   = errors.New("raftstore: leadership lost while committing; the write may or may not have applied")
	ErrEntryTooLarge   = fmt.Errorf("raftstore: command larger than %d bytes", MaxEntrySize)
	ErrUnknownMember   = errors.New("raftstore: no such member")
	ErrShutdown        = errors.New("raftstore: node is shut down")
	ErrAlreadyMember   = errors.New("raftstore: member already present")
	ErrMembership      = errors.New("raftstore: membership change refused")
	ErrTransferFailed  = errors.New("raftstore: leadership transfer failed")
	ErrNotBootstrapped = errors.New("raftstore: node has no cluster configuration yet")
)

// Timing overrides raft's timeouts; zero fields keep raft's defaults
// (1 s heartbeat and election, 500 ms leader lease, 50 ms commit).
type Timing struct {
	Heartbeat   time.Duration
	Election    time.Duration
	LeaderLease time.Duration
	Commit      time.Duration
}

// Config describes one node.
type Config struct {
	NodeID string
	// Dir holds raft/ (log and stable store, snapshots) and state.db.
	Dir string
	// BindAddr is the Raft listen address; Advertise (default BindAddr) is
	// what peers dial.
	BindAddr  string
	Advertise string

	Buckets       [][]byte
	SchemaVersion uint32
	Applier       Applier
	Logger        *slog.Logger

	Timing            Timing
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64

	// WALSegmentSize is the size of each raft-wal segment file (default
	// 64 MiB, preallocated). Tests use smaller segments.
	WALSegmentSize int

	// ServerTLS and ClientTLS, when set, put the Raft transport under
	// mutual TLS: accepted connections are served with ServerTLS (which
	// should require and check the peer's certificate), dialled ones use
	// ClientTLS. The handshake runs on the connection's first use, so a
	// slow or hostile dialler never holds up Accept.
	ServerTLS, ClientTLS *tls.Config
	// IdleTimeout closes an accepted Raft connection that receives nothing
	// for this long (0: never); a live leader's heartbeats keep its
	// connections busy, and a closed pooled connection is dialled again.
	IdleTimeout time.Duration
	// WrapConn, when set, sees every outgoing Raft connection and may refuse
	// it or wrap it (tests use it to cut links).
	WrapConn func(target string, c net.Conn) (net.Conn, error)
	// OnLeader runs while this node is the leader and its FSM has caught up
	// with everything committed in earlier terms (after a Barrier). Its ctx
	// ends when leadership is lost or the node shuts down.
	OnLeader func(ctx context.Context)
}

// Server is one member of the Raft configuration.
type Server struct {
	ID      string
	Address string
	Voter   bool
}

// Store is a running Raft node.
type Store struct {
	cfg   Config
	log   *slog.Logger
	raft  *raft.Raft
	fsm   *fsm
	logs  *wal.WAL
	cache *logCache // raft reads its log through it; so does ReadIndex
	trans *raft.NetworkTransport

	ready  atomic.Bool // leader has run its Barrier in the current term
	stopCh chan struct{}
	// raftDone is closed once raft has shut down: a future raft never
	// answered (an entry its FSM loop had not taken when it stopped) is
	// answered then, so no goroutine waits on it for ever.
	raftDone chan struct{}
	// leaderMu guards leaderCh, closed and replaced at every leader
	// observation (LeaderChanged).
	leaderMu sync.Mutex
	leaderCh chan struct{}
	wg       sync.WaitGroup
	shutOnce sync.Once
	shutErr  error
}

// Open starts a node. It does not bootstrap; see Bootstrap.
func Open(cfg Config) (*Store, error) {
	if cfg.NodeID == "" || cfg.Dir == "" || cfg.BindAddr == "" || cfg.Applier == nil {
		return nil, errors.New("raftstore: NodeID, Dir, BindAddr and Applier are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Advertise == "" {
		cfg.Advertise = cfg.BindAddr
	}
	raftDir := filepath.Join(cfg.Dir, "raft")
	if err := os.MkdirAll(raftDir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", raftDir, err)
	}
	s := &Store{cfg: cfg, log: cfg.Logger, stopCh: make(chan struct{}), raftDone: make(chan struct{})}

	f, err := openFSM(filepath.Join(cfg.Dir, "state.db"), cfg.Buckets, cfg.SchemaVersion, cfg.Applier)
	if err != nil {
		return nil, err
	}
	s.fsm = f
	if f.set != "" {
		s.log.Warn("raft.state_set_aside", "path", f.path+".untrusted", "why", f.set,
			"action", "rebuilding state.db from the latest snapshot and the log")
	}

	// raft-wal: one fsync per append against raft-boltdb's two, about 2.7×
	// the throughput on this class of disk (docs/benchmarks.md), and its
	// file does not bloat after truncation. It is also the stable store.
	walDir := filepath.Join(raftDir, "wal")
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		f.close()
		return nil, fmt.Errorf("create %s: %w", walDir, err)
	}
	segment := cfg.WALSegmentSize
	if segment <= 0 {
		segment = 64 << 20
	}
	logs, err := wal.Open(walDir, wal.WithSegmentSize(segment))
	if err != nil {
		f.close()
		return nil, fmt.Errorf("open raft log: %w", err)
	}
	s.logs = logs
	cache := newLogCache(logs, 512, 64<<20)
	s.cache = cache
	hlog := newHCLogger(cfg.Logger)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(raftDir, 2, hlog)
	if err != nil {
		s.closeStores()
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}

	stream, err := newStreamLayer(cfg.BindAddr, cfg.Advertise, cfg.WrapConn)
	if err != nil {
		s.closeStores()
		return nil, err
	}
	stream.serverTLS, stream.clientTLS, stream.idle = cfg.ServerTLS, cfg.ClientTLS, cfg.IdleTimeout
	s.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:                  stream,
		MaxPool:                 3,
		Timeout:                 10 * time.Second,
		Logger:                  hlog,
		MsgpackUseNewTimeFormat: true,
	})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hlog
	rc.ShutdownOnRemove = true
	// state.db persists (the applied-index skip covers replays) unless it
	// was missing or set aside: then the latest snapshot is restored first.
	rc.NoSnapshotRestoreOnStart = !f.rebuild
	rc.NoLegacyTelemetry = true
	rc.SnapshotThreshold = 8192
	rc.SnapshotInterval = 30 * time.Second
	rc.TrailingLogs = 10240
	rc.MaxAppendEntries = 256
	rc.BatchApplyCh = true
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.SnapshotInterval > 0 {
		rc.SnapshotInterval = cfg.SnapshotInterval
	}
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	if t := cfg.Timing; t.Heartbeat > 0 {
		rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout, rc.CommitTimeout = t.Heartbeat, t.Election, t.LeaderLease, t.Commit
	}
	r, err := raft.NewRaft(rc, f, cache, logs, snaps, s.trans)
	if err != nil {
		s.trans.Close()
		s.closeStores()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	s.raft = r
	s.leaderCh = make(chan struct{})
	obs := make(chan raft.Observation, 16)
	observer := raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	s.raft.RegisterObserver(observer)
	s.wg.Add(2)
	go s.monitorLeadership()
	go func() {
		defer s.wg.Done()
		defer s.raft.DeregisterObserver(observer)
		for {
			select {
			case <-obs:
				s.leaderMu.Lock()
				close(s.leaderCh)
				s.leaderCh = make(chan struct{})
				s.leaderMu.Unlock()
			case <-s.stopCh:
				return
			}
		}
	}()
	return s, nil
}

func (s *Store) closeStores() {
	if s.logs != nil {
		s.logs.Close()
	}
	s.fsm.close()
}

// HasState reports whether this node already belongs to a cluster.
func (s *Store) HasState() bool {
	return s.raft.LastIndex() > 0
}

// Bootstrap writes the initial configuration if the node has no Raft state
// yet; on a node with state it does nothing (every node of a new cluster
// may be started with the same peer list).
func (s *Store) Bootstrap(servers []Server) error {
	if s.HasState() {
		return nil
	}
	conf := raft.Configuration{}
	for _, sv := range servers {
		suff := raft.Voter
		if !sv.Voter {
			suff = raft.Nonvoter
		}
		conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(sv.ID), Address: raft.ServerAddress(sv.Address), Suffrage: suff})
	}
	err := s.raft.BootstrapCluster(conf).Error()
	if errors.Is(err, raft.ErrCantBootstrap) {
		return nil
	}
	return err
}

func (s *Store) monitorLeadership() {
	defer s.wg.Done()
	var (
		cancel context.CancelFunc
		done   chan struct{}
	)
	stop := func() {
		if cancel != nil {
			s.ready.Store(false)
			cancel()
			<-done
			cancel = nil
		}
	}
	for {
		select {
		case leader := <-s.raft.LeaderCh():
			stop() // a true after true means leadership was lost and regained
			if leader {
				cancel, done = s.startLeaderLoop()
			}
		case <-s.stopCh:
			stop()
			return
		}
	}
}

func (s *Store) startLeaderLoop() (context.CancelFunc, chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.leaderLoop(ctx)
	}()
	return cancel, done
}

func (s *Store) leaderLoop(ctx context.Context) {
	// Everything committed in earlier terms must be applied before the
	// leader answers consistent reads or acts on timers.
	for {
		f := s.raft.Barrier(time.Minute)
		answerAtShutdown(f, s.raftDone)
		err := f.Error()
		if err == nil {
			break
		}
		s.log.Warn("raft.barrier_failed", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	s.ready.Store(true)
	s.log.Info("raft.leader_established", "applied_index", s.fsm.appliedIndex())
	if s.cfg.OnLeader != nil {
		s.cfg.OnLeader(ctx)
	}
	<-ctx.Done()
}

// Apply proposes a command and waits until it is applied on this node (the
// leader), returning the Applier's response and the entry's index.
func (s *Store) Apply(ctx context.Context, data []byte) (any, uint64, error) {
	if len(data) > MaxEntrySize {
		return nil, 0, ErrEntryTooLarge
	}
	if s.raft.State() != raft.Leader {
		return nil, 0, ErrNotLeader
	}
	fut := s.raft.Apply(data, enqueueTimeout)
	enqueued := answerAtShutdown(fut, s.raftDone)
	done := make(chan error, 1)
	go func() { done <- fut.Error() }()
	select {
	case err := <-done:
		if err != nil {
			if enqueued && errors.Is(err, raft.ErrRaftShutdown) {
				// Raft stopped with the entry in its pipeline: it may
				// have been committed.
				return nil, 0, fmt.Errorf("%w: the node shut down while committing", ErrIndeterminate)
			}
			return nil, 0, mapRaftErr(err)
		}
		return fut.Response(), fut.Index(), nil
	case <-ctx.Done():
		return nil, 0, fmt.Errorf("%w: %v", ErrIndeterminate, ctx.Err())
	}
}

func mapRaftErr(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return ErrNotLeader
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrAbortedByRestore):
		return ErrIndeterminate
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrShutdown
	}
	return err
}

// ReadIndex implements the leader side of a linearizable read (Raft thesis
// §6.4). It returns the index the reader must wait for, after a quorum
// confirmed this node still leads: the last command entry at or below
// raft's commit index, as the commit index is read before the quorum
// round. Not the commit index itself: no-op, barrier and configuration
// entries never reach the FSM, so a reader could wait for ever for a
// commit index that ends in one. And not the leader's own FSM applied
// index: the leader's FSM may trail the commit index that followers have
// already applied, and a read there must not see less than a read on a
// follower that finished before it began (a write not yet acknowledged,
// but committed and seen, is seen from then on). The ready flag (set
// after the term's Barrier) covers entries committed by earlier leaders.
func (s *Store) ReadIndex(ctx context.Context) (uint64, error) {
	if s.raft.State() != raft.Leader {
		return 0, ErrNotLeader
	}
	if !s.ready.Load() {
		return 0, ErrNotReady
	}
	idx, err := s.lastCommand(s.raft.CommitIndex())
	if err != nil {
		return 0, err
	}
	vf := s.raft.VerifyLeader()
	answerAtShutdown(vf, s.raftDone)
	if err := vf.Error(); err != nil {
		if errors.Is(mapRaftErr(err), ErrIndeterminate) {
			return 0, ErrNotLeader // a read changed nothing: never "result unknown"
		}
		return 0, mapRaftErr(err)
	}
	return idx, nil
}

// lastCommand is the index of the last command entry at or below commit
// that this node's FSM has not applied yet, or its applied index when
// every entry past it is of another kind. The entries past the applied
// index are few and in the log cache.
func (s *Store) lastCommand(commit uint64) (uint64, error) {
	applied := s.fsm.appliedIndex()
	for i := commit; i > applied; i-- {
		var l raft.Log
		if err := s.cache.GetLog(i, &l); err != nil {
			return 0, fmt.Errorf("%w: read index: log entry %d: %v", ErrNotReady, i, err)
		}
		if l.Type == raft.LogCommand {
			return i, nil
		}
	}
	return applied, nil
}

// WaitApplied blocks until this node's FSM has applied index.
func (s *Store) WaitApplied(ctx context.Context, index uint64) error {
	return s.fsm.waitApplied(ctx, index)
}

// Restores counts snapshots installed into the FSM since this node started.
// Revisions are not monotonic across a restore, so watchers that see it
// change start over with a full snapshot.
func (s *Store) Restores() uint64 { return s.fsm.restores.Load() }

// AppliedIndex is the index of the last entry applied to state.db.
func (s *Store) AppliedIndex() uint64 { return s.fsm.appliedIndex() }

// View runs fn in a read transaction of the local state.
func (s *Store) View(fn func(kv KV) error) error {
	return s.fsm.view(func(tx *bolt.Tx) error { return fn(NewKV(tx)) })
}

// IsLeader reports whether this node is the leader.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// Ready reports whether this node is the leader and has applied everything
// committed before its term.
func (s *Store) Ready() bool { return s.IsLeader() && s.ready.Load() }

// Leader returns the leader's id and Raft address, empty when unknown.
func (s *Store) Leader() (id, addr string) {
	a, i := s.raft.LeaderWithID()
	return string(i), string(a)
}

// State returns "Leader", "Follower", "Candidate" or "Shutdown".
func (s *Store) State() string { return s.raft.State().String() }

// CommitIndex, Term and LastContact expose raft's view for status APIs.
func (s *Store) CommitIndex() uint64 { return s.raft.CommitIndex() }

// Term is the current term.
func (s *Store) Term() uint64 {
	var t uint64
	fmt.Sscan(s.raft.Stats()["term"], &t)
	return t
}

// LastContact is when this follower last heard from the leader.
func (s *Store) LastContact() time.Time { return s.raft.LastContact() }

// LeaderChanged returns a channel closed at the next change of the leader
// Raft reports (a new leader, or none).
func (s *Store) LeaderChanged() <-chan struct{} {
	s.leaderMu.Lock()
	defer s.leaderMu.Unlock()
	return s.leaderCh
}

// NodeID is this node's id.
func (s *Store) NodeID() string { return s.cfg.NodeID }

// LogProgress is this node's last log index and the index its state
// machine has applied (configuration and no-op entries count in both).
func (s *Store) LogProgress() (last, applied uint64) {
	return s.raft.LastIndex(), s.raft.AppliedIndex()
}

// Stats is raft's stats map.
func (s *Store) Stats() map[string]string { return s.raft.Stats() }

// Servers returns the latest Raft configuration.
func (s *Store) Servers() ([]Server, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, mapRaftErr(err)
	}
	var out []Server
	for _, sv := range f.Configuration().Servers {
		out = append(out, Server{ID: string(sv.ID), Address: string(sv.Address), Voter: sv.Suffrage == raft.Voter})
	}
	return out, nil
}

// AddServer adds a voter (or non-voter) on the leader. Adding a server that
// is already present with the same address is a no-op, except that a
// non-voter added as a voter is promoted (never the reverse); an id
// or address already in use otherwise is refused (remove the old member
// first), so a typo cannot re-address or evict a live member.
func (s *Store) AddServer(ctx context.Context, id, addr string, voter bool) error {
	servers, err := s.Servers()
	if err != nil {
		return err
	}
	for _, sv := range servers {
		if sv.ID == id && sv.Address == addr {
			if sv.Voter == voter {
				return nil
			}
			if sv.Voter {
				return fmt.Errorf("%w: %q is a voter; remove it first to make it a non-voter", ErrAlreadyMember, id)
			}
			break // a non-voter promoted: AddVoter changes its suffrage
		}
		if sv.ID == id {
			return fmt.Errorf("%w: %q is a member at %s (voter=%v); remove it first to change it", ErrAlreadyMember, id, sv.Address, sv.Voter)
		}
		if sv.Address == addr {
			return fmt.Errorf("%w: address %s belongs to member %q; remove it first", ErrAlreadyMember, addr, sv.ID)
		}
	}
	var f raft.IndexFuture
	if voter {
		f = s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 0)
	} else {
		f = s.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 0)
	}
	return membershipErr(waitFuture(ctx, f))
}

// membershipErr maps raft's refusals of a configuration change.
func membershipErr(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if m := mapRaftErr(err); m != err {
		return m
	}
	return fmt.Errorf("%w: %v", ErrMembership, err)
}

// RemoveServer removes a member on the leader.
func (s *Store) RemoveServer(ctx context.Context, id string) error {
	servers, err := s.Servers()
	if err != nil {
		return err
	}
	found := false
	for _, sv := range servers {
		found = found || sv.ID == id
	}
	if !found {
		return fmt.Errorf("%w: %q", ErrUnknownMember, id)
	}
	return membershipErr(waitFuture(ctx, s.raft.RemoveServer(raft.ServerID(id), 0, 0)))
}

// TransferLeadership hands leadership to id, or to the most up-to-date
// voter when id is empty.
func (s *Store) TransferLeadership(ctx context.Context, id string) error {
	if s.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	var f raft.Future
	if id == "" {
		f = s.raft.LeadershipTransfer()
	} else {
		servers, err := s.Servers()
		if err != nil {
			return err
		}
		addr := ""
		for _, sv := range servers {
			if sv.ID == id {
				addr = sv.Address
			}
		}
		if addr == "" {
			return fmt.Errorf("%w: %q", ErrUnknownMember, id)
		}
		f = s.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(addr))
	}
	if err := waitFuture(ctx, f); err != nil {
		return fmt.Errorf("%w: %v", ErrTransferFailed, err)
	}
	return nil
}

func waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WriteSnapshot writes a consistent snapshot of the local state to w.
func (s *Store) WriteSnapshot(w io.Writer) (*raftv1.SnapshotHeader, error) {
	var hdr *raftv1.SnapshotHeader
	err := s.fsm.view(func(tx *bolt.Tx) error {
		var err error
		hdr, err = writeSnapshot(w, tx, s.cfg.SchemaVersion)
		return err
	})
	return hdr, err
}

// SnapshotSize is the size of the state file a snapshot would carry (the
// header adds a few hundred bytes).
func (s *Store) SnapshotSize() int64 {
	var n int64
	_ = s.fsm.view(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
	return n
}

// Restore replaces the cluster's state with a snapshot read from r. It runs
// on the leader; the snapshot is verified completely before raft sees it,
// and followers receive it through InstallSnapshot.
func (s *Store) Restore(ctx context.Context, r io.Reader) (*raftv1.SnapshotHeader, error) {
	if s.raft.State() != raft.Leader {
		return nil, ErrNotLeader
	}
	tmp, err := os.CreateTemp(s.cfg.Dir, "user-restore-*.snap")
	if err != nil {
		return nil, fmt.Errorf("create restore file: %w", err)
	}
	tmpPath := tmp.Name()
	defer os.Remove(tmpPath)
	// Keep the raw stream (header included) and verify a decoded copy.
	verified := tmpPath + ".state"
	defer os.Remove(verified)
	hdr, err := receiveSnapshot(io.TeeReader(r, tmp), verified, s.cfg.SchemaVersion)
	tmp.Close()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(tmpPath)
	if err != nil {
		return nil, fmt.Errorf("reopen restore file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat restore file: %w", err)
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: hdr.AppliedIndex, Term: hdr.AppliedTerm, Size: fi.Size()}
	if err := s.raft.Restore(meta, f, 5*time.Minute); err != nil {
		return nil, fmt.Errorf("raft restore: %w", mapRaftErr(err))
	}
	return hdr, nil
}

// Shutdown stops the node. With transfer set and this node the leader, it
// first hands leadership to another voter (three attempts, as Nomad does)
// so the cluster does not wait out an election timeout.
func (s *Store) Shutdown(transfer bool) error {
	s.shutOnce.Do(func() {
		if transfer && s.raft.State() == raft.Leader {
			for i := 0; i < 3; i++ {
				err := s.raft.LeadershipTransfer().Error()
				if err == nil {
					s.log.Info("raft.leadership_transferred")
					break
				}
				s.log.Warn("raft.leadership_transfer_failed", "attempt", i+1, "err", err)
			}
		}
		close(s.stopCh)
		err := s.raft.Shutdown().Error()
		close(s.raftDone)
		s.wg.Wait()
		if terr := s.trans.Close(); err == nil {
			err = terr
		}
		if lerr := s.logs.Close(); err == nil {
			err = lerr
		}
		if ferr := s.fsm.close(); err == nil {
			err = ferr
		}
		s.shutErr = err
	})
	return s.shutErr
}

// newHCLogger routes raft's hclog output into slog at INFO and above.
func newHCLogger(l *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:   "raft",
		Level:  hclog.Info,
		Output: slogWriter{l},
	})
}

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	switch {
	case strings.Contains(line, "[ERROR]"):
		level = slog.LevelError
	case strings.Contains(line, "[WARN]"):
		level = slog.LevelWarn
	}
	w.l.Log(context.Background(), level, "raft.library_log", "line", line)
	return len(p), nil
}

// ContentHash is a SHA-256 over every bucket, key and value of the local
// state (raftstore's own _meta bucket included), in key order. Replicas
// that applied the same log hash equal even though their files differ
// byte for byte.
func (s *Store) ContentHash() (string, error) { return s.hash(true) }

// DataHash is ContentHash without raftstore's _meta bucket (the applied
// index): it changes only when a command changed the replicated data, not
// when raft applied an entry of its own (a new leader's no-op).
func (s *Store) DataHash() (string, error) { return s.hash(false) }

func (s *Store) hash(meta bool) (string, error) {
	h := sha256.New()
	err := s.fsm.view(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if !meta && bytes.Equal(name, metaBucket) {
				return nil
			}
			fmt.Fprintf(h, "bucket %q\n", name)
			return b.ForEach(func(k, v []byte) error {
				fmt.Fprintf(h, "%x=%x\n", k, v)
				return nil
			})
		})
	})
	return hex.EncodeToString(h.Sum(nil)), err
}

// Snapshot asks raft to take a snapshot now (and compact the log).
func (s *Store) Snapshot() error {
	return s.raft.Snapshot().Error()
}

// answerAtShutdown makes a future (an apply, a barrier, a leadership
// check) answer ErrRaftShutdown once done is closed. hashicorp/raft answers every future it takes, except those
// still queued for its FSM loop when it stops; their futures have no
// shutdown channel of their own (its deferError.ShutdownCh, which it sets
// only on restore futures), so one is set here. It reports whether fut is
// such a future (the entry was handed to raft), false for the error
// futures raft returns when it refused the entry outright.
func answerAtShutdown(fut raft.Future, done chan struct{}) bool {
	v := reflect.ValueOf(fut)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return false
	}
	f := v.Elem().FieldByName("ShutdownCh")
	if !f.IsValid() || !f.CanSet() || !f.IsNil() || f.Type() != reflect.TypeOf(done) {
		return false
	}
	f.Set(reflect.ValueOf(done))
	return true
}
