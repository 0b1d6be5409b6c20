package server_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/server"
)

// Fifty streams watching the same scope, each on its own connection, at
// the same revision: a change is built and encoded once for all of them
// (baldur_watch_messages_built_total), and every stream receives it
// intact. A stream with another filter gets its own.
func TestWatchersShareOneEncodedMessage(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	n := c.Nodes[0]
	const watchers = 50
	got := make(chan *pb.WatchEmergencyResponse, watchers+1)
	watch := func(scope string) {
		stream, err := emergencyClient(t, n).WatchEmergency(ctxT(t), &pb.WatchEmergencyRequest{Scope: scope})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil { // the snapshot
			t.Fatal(err)
		}
		go func() {
			for {
				msg, err := stream.Recv()
				if err != nil {
					return
				}
				if len(msg.States) > 0 {
					got <- msg
				}
			}
		}()
	}
	for range watchers {
		watch("shared")
	}
	watch("other")
	time.Sleep(200 * time.Millisecond) // every stream idle at the same revision
	before := testcluster.MetricValue(t, n.HTTPAddr, "baldur_watch_messages_built_total")
	if _, err := emergencyClient(t, n).TriggerEmergency(ctxT(t), &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_1, Scope: "shared", Reason: "for the fifty"}); err != nil {
		t.Fatal(err)
	}
	for i := range watchers {
		select {
		case msg := <-got:
			if msg.States[0].Scope != "shared" || msg.States[0].Reason != "for the fifty" || msg.States[0].Level != pb.EmergencyLevel_LEVEL_1 {
				t.Fatalf("stream %d got %v", i, msg)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d streams got the change", i, watchers)
		}
	}
	built := testcluster.MetricValue(t, n.HTTPAddr, "baldur_watch_messages_built_total") - before
	// One message for the fifty, and at most one per revision for the
	// stream watching "other" (which has nothing to send): not fifty.
	if built < 1 || built > 4 {
		t.Fatalf("%v messages built for %d streams sharing a view", built, watchers)
	}
	select {
	case msg := <-got:
		t.Fatalf("a stream got more than the change (or the other scope got it): %v", msg)
	case <-time.After(100 * time.Millisecond):
	}
	t.Logf("%v messages built for %d streams", built, watchers+1)
}

// A change that lands while a stream's previous message (here a heartbeat,
// sent every millisecond) is completing is still sent: 100 streams, 30
// changes, every stream ends at the last one.
func TestWatchersMissNoChangeWhileSending(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1, testcluster.WithConfig(func(_ int, cfg *server.Config) { cfg.WatchHeartbeat = time.Millisecond }))
	n := c.Nodes[0]
	const watchers = 100
	last := make([]atomic.Value, watchers)
	for i := range watchers {
		stream, err := emergencyClient(t, n).WatchEmergency(ctxT(t), &pb.WatchEmergencyRequest{Scope: "race"})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				msg, err := stream.Recv()
				if err != nil {
					return
				}
				for _, st := range msg.States {
					last[i].Store(st.Reason)
				}
			}
		}()
	}
	em := emergencyClient(t, n)
	for k := range 30 {
		if _, err := em.TriggerEmergency(ctxT(t), &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_1, Scope: "race", Reason: fmt.Sprint("change ", k)}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(k%4) * time.Millisecond)
	}
	if !testcluster.Eventually(10*time.Second, func() bool {
		for i := range last {
			if last[i].Load() != "change 29" {
				return false
			}
		}
		return true
	}) {
		for i := range last {
			if last[i].Load() != "change 29" {
				t.Fatalf("stream %d ended at %v, want change 29", i, last[i].Load())
			}
		}
	}
}
