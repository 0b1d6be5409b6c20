package raftstore

import (
	"sync"

	"github.com/hashicorp/raft"
)

// logCache keeps the most recent log entries in memory so the leader
// replicates them without reading the log back, as raft.LogCache does, but
// bounded in bytes too: an entry that would take the cache past maxBytes
// is not kept (it is read back from the log when needed). raft.LogCache
// keeps any 512 entries: with DLQ stores of ~750 KB each, 380 MB that the
// collector, at GOGC=400, lets grow to several GB.
type logCache struct {
	raft.LogStore
	maxBytes int

	mu    sync.RWMutex
	ring  []*raft.Log
	bytes int // of the entries in ring
}

func newLogCache(store raft.LogStore, slots, maxBytes int) *logCache {
	return &logCache{LogStore: store, maxBytes: maxBytes, ring: make([]*raft.Log, slots)}
}

func (c *logCache) GetLog(idx uint64, out *raft.Log) error {
	c.mu.RLock()
	l := c.ring[idx%uint64(len(c.ring))]
	c.mu.RUnlock()
	if l != nil && l.Index == idx {
		*out = *l
		return nil
	}
	return c.LogStore.GetLog(idx, out)
}

func (c *logCache) StoreLog(l *raft.Log) error { return c.StoreLogs([]*raft.Log{l}) }

func (c *logCache) StoreLogs(logs []*raft.Log) error {
	err := c.LogStore.StoreLogs(logs)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range logs {
		slot := l.Index % uint64(len(c.ring))
		if old := c.ring[slot]; old != nil {
			c.bytes -= len(old.Data)
			c.ring[slot] = nil
		}
		// Never serve what the store may not hold; never pass the bound.
		if err == nil && c.bytes+len(l.Data) <= c.maxBytes {
			c.ring[slot] = l
			c.bytes += len(l.Data)
		}
	}
	return err
}

func (c *logCache) DeleteRange(min, max uint64) error {
	c.mu.Lock()
	clear(c.ring)
	c.bytes = 0
	c.mu.Unlock()
	return c.LogStore.DeleteRange(min, max)
}

// IsMonotonic passes on the store's answer (raft-wal's log must not have
// gaps: after a restore raft removes the old entries instead of leaving
// them). Embedding the interface does not carry this method over.
func (c *logCache) IsMonotonic() bool {
	m, ok := c.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}
