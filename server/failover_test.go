package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"google.golang.org/grpc/metadata"
)

// TestWritesRideOutLeaderFailure: writes sent to followers with a 5 s
// deadline while the leader is killed, and later while the new leader is
// cut off, all succeed: a follower that cannot reach its leader waits for
// the next one and forwards there, instead of answering UNAVAILABLE.
func TestWritesRideOutLeaderFailure(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	for round, fail := range []string{"kill", "partition"} {
		leader := c.LeaderIndex()
		var targets []int
		for i := range c.Nodes {
			if i != leader {
				targets = append(targets, i)
			}
		}
		var (
			mu   sync.Mutex
			errs []error
			ok   int
			wg   sync.WaitGroup
		)
		stop := make(chan struct{})
		begin := time.Now()
		for w, i := range targets {
			em := emergencyClient(t, c.Nodes[i])
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					t0 := time.Now()
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					ctx = metadata.AppendToOutgoingContext(ctx, "baldur-request-id", fmt.Sprintf("r%d-w%d-%d", round, w, n))
					_, err := em.TriggerEmergency(ctx, &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_1, Scope: fmt.Sprintf("w%d", w), Reason: fmt.Sprint(n)})
					cancel()
					mu.Lock()
					if err != nil {
						errs = append(errs, fmt.Errorf("write %d to %s at +%v: %w", n, c.Nodes[i].ID, t0.Sub(begin).Round(time.Millisecond), err))
					} else {
						ok++
					}
					mu.Unlock()
					time.Sleep(5 * time.Millisecond)
				}
			}()
		}
		time.Sleep(300 * time.Millisecond)
		t.Logf("%s of %s at +%v", fail, c.Nodes[leader].ID, time.Since(begin).Round(time.Millisecond))
		switch fail {
		case "kill":
			c.Kill(leader)
		case "partition":
			c.Partition([]int{leader}, targets)
		}
		// Until a new leader is ready, and a little after.
		if !testcluster.Eventually(15*time.Second, func() bool {
			for _, i := range targets {
				if c.Nodes[i].Store().Ready() {
					return true
				}
			}
			return false
		}) {
			t.Fatalf("%s: no new leader", fail)
		}
		time.Sleep(500 * time.Millisecond)
		close(stop)
		wg.Wait()
		if len(errs) > 0 || ok == 0 {
			t.Fatalf("%s: %d writes succeeded, %d failed; first: %v", fail, ok, len(errs), errs[0])
		}
		t.Logf("%s of the leader: %d writes through followers, none failed", fail, ok)
		switch fail {
		case "kill":
			c.Restart(leader)
		case "partition":
			c.Heal()
		}
		c.WaitForLeader(10 * time.Second)
	}
}
