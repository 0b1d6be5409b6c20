package raftstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
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
