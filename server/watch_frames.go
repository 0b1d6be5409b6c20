package server

import (
	"fmt"
	"sync"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Encode once, send to many: when a change wakes the watchers of a topic,
// they all ask for the same message (what changed between the revision
// they last sent and the one just applied, through the same filter). The
// first to ask builds and encodes it; the others wait for it and send the
// same bytes. The codec (codec.go) sends a *frame as it is.

// frame is an encoded watch message, shared by every stream it is sent to
// (never modified after it is built).
type frame struct{ b []byte }

// marshal is the codec's side: the bytes as they are, in a buffer that is
// not returned to a pool (many streams hold it at once).
func (f *frame) marshal() mem.BufferSlice { return mem.BufferSlice{mem.SliceBuffer(f.b)} }

// frameKey identifies a message: the stream's filter (view), the revision
// it continues from and the one it brings the stream to.
type frameKey struct {
	view           string
	since, applied uint64
}

type frameEntry struct {
	ready chan struct{}
	f     *frame // nil: nothing changed for this view
	err   error
}

// frameCache holds the messages of the latest applied revisions of one
// topic. Entries for older revisions are dropped as new ones come; a
// cache that is full (many filters or lagging streams at once) builds
// without caching.
type frameCache struct {
	mu      sync.Mutex
	entries map[frameKey]*frameEntry
	newest  uint64
	restore uint64 // the store's restore count the entries belong to
	builds  func() // counts a build (metrics)
}

// maxFrames bounds a topic's cache.
const maxFrames = 1024

func newFrameCache(builds func()) *frameCache {
	return &frameCache{entries: map[frameKey]*frameEntry{}, builds: builds}
}

// get returns the frame for key, building it with build (once for every
// caller asking for the same key). ok is false when nothing changed for
// the view (build said so). restores is the store's restore count: after
// a snapshot restore the same revision can hold other state, so nothing
// kept from before is used.
func (c *frameCache) get(key frameKey, restores uint64, build func() (proto.Message, bool)) (f *frame, ok bool, err error) {
	c.mu.Lock()
	if restores != c.restore {
		clear(c.entries)
		c.restore, c.newest = restores, 0
	}
	if key.applied > c.newest {
		// A newer revision: what was kept for older ones is only asked
		// for by streams that lag, and they can build their own.
		for k := range c.entries {
			if k.applied < key.applied {
				delete(c.entries, k)
			}
		}
		c.newest = key.applied
	}
	if e, ok := c.entries[key]; ok {
		c.mu.Unlock()
		<-e.ready
		return e.f, e.f != nil, e.err
	}
	var e *frameEntry
	if len(c.entries) < maxFrames && key.applied == c.newest {
		e = &frameEntry{ready: make(chan struct{})}
		c.entries[key] = e
	}
	c.mu.Unlock()
	f, err = encodeFrame(build)
	if c.builds != nil {
		c.builds()
	}
	if e != nil {
		e.f, e.err = f, err
		close(e.ready)
	}
	return f, f != nil, err
}

// peek returns the frame for key if one is kept (waiting for it if it is
// being built), without building: found is false when none is.
func (c *frameCache) peek(key frameKey, restores uint64) (f *frame, ok bool, err error, found bool) {
	c.mu.Lock()
	e, hit := c.entries[key]
	if restores != c.restore {
		hit = false
	}
	c.mu.Unlock()
	if !hit {
		return nil, false, nil, false
	}
	<-e.ready
	return e.f, e.f != nil, e.err, true
}

func encodeFrame(build func() (proto.Message, bool)) (*frame, error) {
	msg, ok := build()
	if !ok {
		return nil, nil
	}
	b, err := proto.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("server: encode watch message: %w", err)
	}
	return &frame{b: b}, nil
}

// beatCache holds one topic's heartbeats: an idle stream's heartbeat says
// where it is (and, for circuits, the kill switch as it is now), so every
// stream at that revision sends the same bytes, built once.
type beatCache struct {
	mu    sync.Mutex
	byKey map[beatKey]*frame
}

// beatKey is a heartbeat's revision, and the topic's notify count and the
// store's restore count it was built at: a change to the topic (the kill
// switch) or a restore builds it again.
type beatKey struct{ rev, gen, restores uint64 }

// maxBeats bounds a topic's heartbeats kept (streams at many revisions at
// once: the cache starts over).
const maxBeats = 256

func newBeatCache() *beatCache { return &beatCache{byKey: map[beatKey]*frame{}} }

// get returns the heartbeat for key, building it with build when none is
// kept (nil: build has nothing to send).
func (c *beatCache) get(key beatKey, build func() (proto.Message, bool)) (*frame, error) {
	c.mu.Lock()
	f, ok := c.byKey[key]
	c.mu.Unlock()
	if ok {
		return f, nil
	}
	f, err := encodeFrame(build)
	if err != nil || f == nil {
		return f, err
	}
	c.mu.Lock()
	if len(c.byKey) >= maxBeats {
		clear(c.byKey)
	}
	c.byKey[key] = f
	c.mu.Unlock()
	return f, nil
}
