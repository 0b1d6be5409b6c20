package raftstore

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// KV adapts a bbolt transaction to the small key-value interface the domain
// packages declare. Buckets must exist (they are created from the schema at
// open). A failed write inside the FSM means the state file is unusable, so
// Put and Delete panic instead of returning an error the caller could
// ignore; raft then stops the node rather than letting replicas diverge.
type KV struct {
	tx *bolt.Tx
}

// NewKV wraps tx.
func NewKV(tx *bolt.Tx) KV { return KV{tx: tx} }

func (k KV) bucket(name []byte) *bolt.Bucket {
	b := k.tx.Bucket(name)
	if b == nil {
		panic(fmt.Sprintf("raftstore: bucket %q is not in the schema", name))
	}
	return b
}

// Get returns a copy of the value stored under key, or nil.
func (k KV) Get(bucket, key []byte) []byte {
	v := k.bucket(bucket).Get(key)
	if v == nil {
		return nil
	}
	return bytes.Clone(v)
}

// Put stores value under key.
func (k KV) Put(bucket, key, value []byte) {
	if err := k.bucket(bucket).Put(key, value); err != nil {
		panic(fmt.Sprintf("raftstore: put %s/%x: %v", bucket, key, err))
	}
}

// Delete removes key.
func (k KV) Delete(bucket, key []byte) {
	if err := k.bucket(bucket).Delete(key); err != nil {
		panic(fmt.Sprintf("raftstore: delete %s/%x: %v", bucket, key, err))
	}
}

// Scan visits keys in order starting at start (the first key when start is
// nil), or in reverse order from start (the last key when nil) when reverse
// is set, until fn returns false. Keys and values are only valid during fn.
func (k KV) Scan(bucket, start []byte, reverse bool, fn func(key, value []byte) bool) {
	c := k.bucket(bucket).Cursor()
	var key, val []byte
	switch {
	case !reverse && start == nil:
		key, val = c.First()
	case !reverse:
		key, val = c.Seek(start)
	case start == nil:
		key, val = c.Last()
	default:
		key, val = c.Seek(start)
		if key == nil {
			key, val = c.Last()
		} else if !bytes.Equal(key, start) {
			key, val = c.Prev()
		}
	}
	for key != nil {
		if !fn(key, val) {
			return
		}
		if reverse {
			key, val = c.Prev()
		} else {
			key, val = c.Next()
		}
	}
}

// AppliedIndex is the applied index as of this transaction.
func (k KV) AppliedIndex() uint64 {
	idx, _ := readApplied(k.tx)
	return idx
}
