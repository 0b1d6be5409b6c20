package fsm

import (
	"bytes"
	"encoding/json"
	"sync"
)

// JSONCache remembers the last decoded value of each key's stored JSON.
// Records read far more often than they change (a breaker read on every
// report ingest, the member table on every forwarded write) then cost a
// bytes comparison instead of a decode. T must hold no references (no
// slices, maps or pointers): the value returned is a copy the caller owns.
type JSONCache[T any] struct {
	mu sync.Mutex
	m  map[string]cachedJSON[T]
}

type cachedJSON[T any] struct {
	raw []byte
	v   T
}

// jsonCacheMax bounds a cache; past it the cache starts again.
const jsonCacheMax = 1 << 16

// Decode returns raw (the stored bytes of key, valid only for the read
// that gave them: they are copied when remembered) decoded into a T.
func (c *JSONCache[T]) Decode(key string, raw []byte) (T, error) {
	c.mu.Lock()
	d, ok := c.m[key]
	c.mu.Unlock()
	if ok && bytes.Equal(d.raw, raw) {
		return d.v, nil
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= jsonCacheMax {
		c.m = map[string]cachedJSON[T]{}
	}
	c.m[key] = cachedJSON[T]{raw: bytes.Clone(raw), v: v}
	c.mu.Unlock()
	return v, nil
}
