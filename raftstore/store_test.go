package raftstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"github.com/hashicorp/raft"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var counterBucket = []byte("counter")

// counter is a deliberately non-idempotent Applier: every command adds its
// payload to a total, so a re-applied entry would show.
type counter struct {
	mu      sync.Mutex
	applied []uint64
}

func (c *counter) Apply(kv KV, index, term uint64, data []byte) any {
	var total uint64
	if v := kv.Get(counterBucket, []byte("total")); v != nil {
		total = binary.BigEndian.Uint64(v)
	}
	total += binary.BigEndian.Uint64(data)
	kv.Put(counterBucket, []byte("total"), binary.BigEndian.AppendUint64(nil, total))
	return total
}

func (c *counter) Applied(index uint64) {
	c.mu.Lock()
	c.applied = append(c.applied, index)
	c.mu.Unlock()
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func openNode(t *testing.T, dir, addr string) *Store {
	t.Helper()
	s, err := Open(Config{
		NodeID: "a", Dir: dir, BindAddr: addr, WALSegmentSize: 1 << 20, Buckets: [][]byte{counterBucket}, SchemaVersion: 1, Applier: &counter{},
		Timing: Timing{Heartbeat: 50 * time.Millisecond, Election: 50 * time.Millisecond, LeaderLease: 50 * time.Millisecond, Commit: 5 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Bootstrap([]Server{{ID: "a", Address: addr, Voter: true}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !s.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return s
}

func total(t *testing.T, s *Store) uint64 {
	var v uint64
	if err := s.View(func(kv KV) error {
		if b := kv.Get(counterBucket, []byte("total")); b != nil {
			v = binary.BigEndian.Uint64(b)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

func add(t *testing.T, s *Store, n uint64) uint64 {
	t.Helper()
	resp, idx, err := s.Apply(context.Background(), binary.BigEndian.AppendUint64(nil, n))
	if err != nil {
		t.Fatal(err)
	}
	if idx == 0 {
		t.Fatal("apply returned index 0")
	}
	return resp.(uint64)
}

func TestReplayAfterRestartAppliesNothingTwice(t *testing.T) {
	for _, snapshotMidway := range []bool{false, true} {
		name := "no snapshot"
		if snapshotMidway {
			name = "entries after a snapshot"
		}
		t.Run(name, func(t *testing.T) {
			dir, addr := t.TempDir(), freeAddr(t)
			s := openNode(t, dir, addr)
			for i := 0; i < 10; i++ {
				add(t, s, 1)
			}
			if snapshotMidway {
				if err := s.Snapshot(); err != nil {
					t.Fatal(err)
				}
			}
			for i := 0; i < 10; i++ {
				add(t, s, 1)
			}
			applied := s.AppliedIndex()
			if err := s.Shutdown(false); err != nil {
				t.Fatal(err)
			}
			s = openNode(t, dir, addr)
			defer s.Shutdown(false)
			if got := total(t, s); got != 20 {
				t.Fatalf("total after restart = %d, want 20 (entries re-applied)", got)
			}
			if got := s.AppliedIndex(); got != applied {
				t.Fatalf("applied index after restart = %d, want %d", got, applied)
			}
			if got := add(t, s, 5); got != 25 {
				t.Fatalf("next apply returned %d, want 25", got)
			}
		})
	}
}

func TestSnapshotStreamRoundTripAndCorruption(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	s := openNode(t, dir, addr)
	defer s.Shutdown(false)
	for i := 0; i < 5; i++ {
		add(t, s, 3)
	}
	var buf bytes.Buffer
	hdr, err := s.WriteSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if hdr.AppliedIndex != s.AppliedIndex() || hdr.SchemaVersion != 1 {
		t.Fatalf("header %v, applied %d", hdr, s.AppliedIndex())
	}
	good := buf.Bytes()
	if _, err := receiveSnapshot(bytes.NewReader(good), t.TempDir()+"/ok.db", 1); err != nil {
		t.Fatalf("a good snapshot is refused: %v", err)
	}
	flip := func(i int) []byte { b := bytes.Clone(good); b[i] ^= 0x01; return b }
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "reading magic"},
		{"bad magic", flip(0), "bad magic"},
		{"data bit flip", flip(len(good) - 1), "SHA-256 mismatch"},
		{"truncated", good[:len(good)-4096], "header says"},
		{"trailing garbage", append(bytes.Clone(good), 1, 2, 3), "header says"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := receiveSnapshot(bytes.NewReader(tc.data), t.TempDir()+"/x.db", 1)
			if !errors.Is(err, ErrBadSnapshot) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrBadSnapshot mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := receiveSnapshot(bytes.NewReader(good), t.TempDir()+"/old.db", 0); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("a snapshot newer than the binary's schema: err = %v", err)
	}
}

// crash stops s as a killed process would leave it: Raft and the log are
// stopped, the state file is closed without a sync and the open marker
// stays (the marker's lock goes with the process).
func crash(t *testing.T, s *Store) {
	t.Helper()
	close(s.stopCh)
	s.raft.Shutdown().Error()
	s.wg.Wait()
	s.trans.Close()
	s.logs.Close()
	s.fsm.mu.Lock()
	defer s.fsm.mu.Unlock()
	if err := s.fsm.db.Close(); err != nil {
		t.Fatal(err)
	}
	s.fsm.marker.Close()
}

func TestStateFileAfterCrashes(t *testing.T) {
	orig := bootID
	t.Cleanup(func() { bootID = orig })
	for _, tc := range []struct {
		name       string
		newBoot    bool // the machine restarted after the crash
		snapshot   bool
		wantAside  bool
		tornWrites bool
	}{
		{name: "process crash: the file is used as it is", snapshot: true},
		{name: "machine crash: set aside, rebuilt from snapshot and log", newBoot: true, snapshot: true, wantAside: true, tornWrites: true},
		{name: "machine crash before any snapshot: rebuilt from the log", newBoot: true, wantAside: true, tornWrites: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bootID = func() string { return "boot-1" }
			dir, addr := t.TempDir(), freeAddr(t)
			s := openNode(t, dir, addr)
			for i := 0; i < 10; i++ {
				add(t, s, 1)
			}
			if tc.snapshot {
				if err := s.Snapshot(); err != nil {
					t.Fatal(err)
				}
			}
			for i := 0; i < 10; i++ {
				add(t, s, 2)
			}
			applied := s.AppliedIndex()
			crash(t, s)
			if b, err := os.ReadFile(filepath.Join(dir, "state.db.open")); err != nil || len(b) != markerSize || strings.TrimSpace(string(b)) != "boot-1" {
				t.Fatalf("open marker after a crash: %q %v", b, err)
			}
			if tc.newBoot {
				bootID = func() string { return "boot-2" }
			}
			if tc.tornWrites {
				// What an unsynced file may look like after power loss.
				f, err := os.OpenFile(filepath.Join(dir, "state.db"), os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				f.WriteAt(bytes.Repeat([]byte{0xAB}, 8192), 4096*2)
				f.Close()
			}
			s = openNode(t, dir, addr)
			if _, err := os.Stat(filepath.Join(dir, "state.db.untrusted")); (err == nil) != tc.wantAside {
				t.Fatalf("state.db.untrusted present = %v, want %v", err == nil, tc.wantAside)
			}
			waitApplied(t, s, applied)
			if want := map[bool]uint64{true: 1}[tc.wantAside && tc.snapshot]; s.fsm.restores.Load() != want {
				t.Fatalf("snapshots restored at start = %d, want %d", s.fsm.restores.Load(), want)
			}
			if got := total(t, s); got != 30 {
				t.Fatalf("total after restart = %d, want 30", got)
			}
			if got := add(t, s, 5); got != 35 {
				t.Fatalf("next apply returned %d, want 35", got)
			}
			if err := s.Shutdown(false); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(dir, "state.db.open")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("open marker after a clean shutdown: %v", err)
			}
		})
	}
}

func waitApplied(t *testing.T, s *Store, index uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.fsm.waitApplied(ctx, index); err != nil {
		t.Fatal(err)
	}
}

func TestStateFileInUseIsRefused(t *testing.T) {
	dir := t.TempDir()
	s := openNode(t, dir, freeAddr(t))
	defer s.Shutdown(false)
	_, err := Open(Config{NodeID: "b", Dir: dir, BindAddr: freeAddr(t), Buckets: [][]byte{counterBucket}, SchemaVersion: 1, Applier: &counter{}})
	if err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("second open of a data dir: %v", err)
	}
}

// Apply futures get the store's shutdown channel (answerAtShutdown): the
// field it sets exists in the raft version built against.
func TestApplyFuturesAnswerAtShutdown(t *testing.T) {
	s := openNode(t, t.TempDir(), freeAddr(t))
	defer s.Shutdown(false)
	done := make(chan struct{})
	fut := s.raft.Apply(binary.BigEndian.AppendUint64(nil, 1), time.Second)
	if !answerAtShutdown(fut, done) {
		t.Fatal("an apply future's ShutdownCh could not be set: hashicorp/raft changed; see answerAtShutdown")
	}
	_ = fut.Error()
	for name, f := range map[string]raft.Future{"barrier": s.raft.Barrier(time.Second), "verify": s.raft.VerifyLeader()} {
		if !answerAtShutdown(f, make(chan struct{})) {
			t.Errorf("a %s future's ShutdownCh could not be set", name)
		}
		_ = f.Error()
	}
}

// gated is the counter with one command (payload 0) held until release
// is closed: the FSM then trails raft's commit index.
type gated struct {
	counter
	release chan struct{}
}

func (g *gated) Apply(kv KV, index, term uint64, data []byte) any {
	if binary.BigEndian.Uint64(data) == 0 {
		<-g.release
	}
	return g.counter.Apply(kv, index, term, data)
}

// A linearizable read waits for every command committed when it began,
// even while the leader's own FSM trails the commit index (followers may
// have applied such a command and shown it to a read already).
func TestReadIndexCoversCommandsTheLeaderHasNotApplied(t *testing.T) {
	addr := freeAddr(t)
	g := &gated{release: make(chan struct{})}
	s, err := Open(Config{
		NodeID: "a", Dir: t.TempDir(), BindAddr: addr, WALSegmentSize: 1 << 20, Buckets: [][]byte{counterBucket}, SchemaVersion: 1, Applier: g,
		Timing: Timing{Heartbeat: 50 * time.Millisecond, Election: 50 * time.Millisecond, LeaderLease: 50 * time.Millisecond, Commit: 5 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(false)
	var once sync.Once
	release := func() { once.Do(func() { close(g.release) }) }
	defer release() // before Shutdown, which waits for the FSM
	if err := s.Bootstrap([]Server{{ID: "a", Address: addr, Voter: true}}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); !s.Ready(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
	}
	add(t, s, 5)
	before := s.raft.LastIndex()
	held := s.raft.Apply(binary.BigEndian.AppendUint64(nil, 0), 5*time.Second)
	for deadline := time.Now().Add(5 * time.Second); s.raft.CommitIndex() <= before; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the held command was not committed")
		}
	}
	idx, err := s.ReadIndex(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if applied := s.fsm.appliedIndex(); idx <= applied || idx <= before {
		t.Fatalf("read index %d: the committed command past %d is not covered (FSM applied %d)", idx, before, applied)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.WaitApplied(ctx, idx); err == nil {
		t.Fatal("the read did not wait for the held command")
	}
	release()
	if err := held.Error(); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitApplied(context.Background(), idx); err != nil {
		t.Fatal(err)
	}
	if got := total(t, s); got != 5 {
		t.Fatalf("total %d", got)
	}
	// With nothing in flight the read index is the applied index, though
	// the log ends in entries the FSM never sees (the term's no-op).
	idx, err = s.ReadIndex(context.Background())
	if err != nil || idx != s.fsm.appliedIndex() {
		t.Fatalf("idle read index %d (%v), applied %d", idx, err, s.fsm.appliedIndex())
	}
}
