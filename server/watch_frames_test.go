package server

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"google.golang.org/protobuf/proto"
)

// Many streams asking for the same view and revision at once get one
// build and the same bytes; another view or revision builds its own; a
// newer revision drops the older entries; after a restore nothing kept
// from before is served.
func TestFrameCacheBuildsOncePerViewAndRevision(t *testing.T) {
	var builds atomic.Int64
	c := newFrameCache(func() { builds.Add(1) })
	build := func(reason string) func() (proto.Message, bool) {
		return func() (proto.Message, bool) {
			time.Sleep(10 * time.Millisecond) // long enough for the others to queue
			return &pb.WatchEmergencyResponse{Revision: 7, States: []*pb.EmergencyState{{Reason: reason}}}, true
		}
	}
	key := frameKey{view: "scope:", since: 5, applied: 7}
	frames := make([]*frame, 100)
	var wg sync.WaitGroup
	for i := range frames {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, ok, err := c.get(key, 0, build("a"))
			if !ok || err != nil {
				t.Errorf("get: %v %v", ok, err)
			}
			frames[i] = f
		}()
	}
	wg.Wait()
	if builds.Load() != 1 {
		t.Fatalf("%d builds for 100 streams at one view and revision", builds.Load())
	}
	for _, f := range frames {
		if f != frames[0] {
			t.Fatal("streams got different frames")
		}
	}
	var msg pb.WatchEmergencyResponse
	if err := proto.Unmarshal(frames[0].b, &msg); err != nil || msg.States[0].Reason != "a" {
		t.Fatalf("frame decodes to %v (%v)", &msg, err)
	}
	// Another view builds its own; nothing changed is remembered as such.
	if _, ok, _ := c.get(frameKey{view: "scope:x", since: 5, applied: 7}, 0, func() (proto.Message, bool) { return nil, false }); ok || builds.Load() != 2 {
		t.Fatalf("another view: ok %v, builds %d", ok, builds.Load())
	}
	if _, ok, _ := c.get(frameKey{view: "scope:x", since: 5, applied: 7}, 0, build("never")); ok || builds.Load() != 2 {
		t.Fatalf("nothing changed was not kept: ok %v, builds %d", ok, builds.Load())
	}
	// A newer revision drops the older entries.
	c.get(frameKey{view: "scope:", since: 7, applied: 9}, 0, build("b"))
	if _, stale := c.entries[key]; stale || len(c.entries) != 1 {
		t.Fatalf("entries after a newer revision: %v", c.entries)
	}
	// A stream lagging behind builds without caching.
	c.get(key, 0, build("a"))
	if _, kept := c.entries[key]; kept {
		t.Fatal("an older revision was cached")
	}
	// After a restore the same revision is built again.
	n := builds.Load()
	f, _, _ := c.get(frameKey{view: "scope:", since: 7, applied: 9}, 1, build("c"))
	if builds.Load() != n+1 || proto.Unmarshal(f.b, &msg) != nil || msg.States[0].Reason != "c" {
		t.Fatalf("after a restore: builds %d→%d, reason %q", n, builds.Load(), msg.States[0].Reason)
	}
}
