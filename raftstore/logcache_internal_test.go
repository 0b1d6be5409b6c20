package raftstore

import (
	"bytes"
	"testing"

	"github.com/hashicorp/raft"
)

// The log cache serves recent entries from memory, as many as fit its bound
// in bytes; the others are read back from the store.
func TestLogCacheIsBoundedInBytes(t *testing.T) {
	store := raft.NewInmemStore()
	c := newLogCache(store, 4, 200)
	small, big := bytes.Repeat([]byte("s"), 100), bytes.Repeat([]byte("b"), 101)
	if err := c.StoreLogs([]*raft.Log{{Index: 1, Data: small}, {Index: 2, Data: big}, {Index: 3, Data: small}}); err != nil {
		t.Fatal(err)
	}
	// 1 fits (100 bytes), 2 would pass 200 and is not kept, 3 fits.
	cached := 0
	for _, l := range c.ring {
		if l != nil {
			cached++
			if len(l.Data) > 100 {
				t.Fatalf("entry %d of %d bytes cached", l.Index, len(l.Data))
			}
		}
	}
	if cached != 2 || c.bytes != 200 {
		t.Fatalf("%d entries (%d bytes) cached, want 2 (200)", cached, c.bytes)
	}
	for i, want := range [][]byte{small, big, small} {
		var l raft.Log
		if err := c.GetLog(uint64(i+1), &l); err != nil || !bytes.Equal(l.Data, want) {
			t.Fatalf("entry %d: %v", i+1, err)
		}
	}
	// Entries wrap around the ring; a slot holds only its own index.
	if err := c.StoreLogs([]*raft.Log{{Index: 5, Data: small}}); err != nil {
		t.Fatal(err)
	}
	if c.bytes != 200 || c.ring[1] == nil || c.ring[1].Index != 5 {
		t.Fatalf("after reuse: %d bytes, slot 1 %v", c.bytes, c.ring[1])
	}
	var l raft.Log
	if err := c.GetLog(1, &l); err != nil || l.Index != 1 {
		t.Fatalf("entry 1 after its slot was reused: %v %d", err, l.Index)
	}
	if err := c.DeleteRange(1, 3); err != nil {
		t.Fatal(err)
	}
	if err := c.GetLog(3, &l); err == nil {
		t.Fatal("a deleted entry is still served")
	}
}

// raft asks the log store whether it is monotonic to decide how a restore
// treats the old log; the cache must answer for raft-wal.
func TestLogCacheKeepsTheStoresMonotonicity(t *testing.T) {
	if newLogCache(raft.NewInmemStore(), 4, 100).IsMonotonic() {
		t.Fatal("the in-memory store is not monotonic")
	}
	var _ raft.MonotonicLogStore = (*logCache)(nil)
	if !newLogCache(monotonic{raft.NewInmemStore()}, 4, 100).IsMonotonic() {
		t.Fatal("a monotonic store's cache says it is not")
	}
}

type monotonic struct{ *raft.InmemStore }

func (monotonic) IsMonotonic() bool { return true }
