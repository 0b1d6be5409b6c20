package server_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// notApplied reports whether a failed write's answer says it did not
// apply: no leader took it, or its node could not be reached at all.
func notApplied(err error) bool {
	if testcluster.NothingApplied(err) {
		return true
	}
	msg := status.Convert(err).Message()
	return status.Code(err) == codes.Unavailable && (strings.Contains(msg, "connection refused") || strings.Contains(msg, "while dialing"))
}

// registerOp is one call on the register: the reason of emergency scope
// "lin", set by a trigger and read back by a linearizable GetEmergency.
type registerOp struct {
	write bool
	value string
}

// registerModel is a single register holding the last written value.
var registerModel = porcupine.Model{
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in := input.(registerOp)
		if in.write {
			return true, in.value
		}
		return output.(string) == state.(string), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(registerOp)
		if in.write {
			return fmt.Sprintf("write(%s)", in.value)
		}
		return fmt.Sprintf("read() -> %s", output)
	},
}

// Reads and writes of one register (the reason of an emergency scope) from
// five clients, each on its own node, while a node is cut off every 1.5 s
// (the leader every other time) and the leader is killed once: the history
// is linearizable. A write is left out only when its answer said nothing
// applied (NO_LEADER, NOT_LEADER, LEADER_UNREACHABLE, LEADER_NOT_READY); had
// one applied anyway, a read of its value would make the history
// illegal. A write whose outcome is unknown (RESULT_UNKNOWN, a deadline)
// stays in the history as one that may have applied at any later time.
// Failed reads are left out. On failure the history is drawn to an HTML
// file under the test's temp dir.
func TestRegisterHistoryIsLinearizable(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	begin := time.Now()
	var (
		mu                          sync.Mutex
		history                     []porcupine.Operation
		writesOK, writesNo, unknown int
		readsOK, readsFailed        int
		errs                        = map[string]int{}
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for client := 0; client < 5; client++ {
		em := emergencyClient(t, c.Nodes[client%3])
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				call := time.Since(begin).Nanoseconds()
				failed := false
				if n%2 == 0 {
					value := fmt.Sprintf("c%d-%d", client, n)
					ctx = metadata.AppendToOutgoingContext(ctx, "baldur-request-id", value)
					_, err := em.TriggerEmergency(ctx, &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_1, Scope: "lin", Reason: value})
					ret := time.Since(begin).Nanoseconds()
					mu.Lock()
					switch {
					case err == nil:
						writesOK++
						history = append(history, porcupine.Operation{ClientId: client, Input: registerOp{true, value}, Call: call, Output: "", Return: ret})
					case notApplied(err):
						writesNo++ // nothing applied: left out
					default:
						// May have applied, at any time from now on.
						unknown++
						history = append(history, porcupine.Operation{ClientId: client, Input: registerOp{true, value}, Call: call, Output: "", Return: 1 << 62})
					}
					if err != nil {
						failed = true
						errs["write "+baldur.Reason(err)]++
					}
					mu.Unlock()
				} else {
					st, err := em.GetEmergency(ctx, &pb.GetEmergencyRequest{Scope: "lin"})
					ret := time.Since(begin).Nanoseconds()
					mu.Lock()
					if err != nil {
						failed = true
						readsFailed++
						errs["read "+baldur.Reason(err)]++
					} else {
						readsOK++
						history = append(history, porcupine.Operation{ClientId: client, Input: registerOp{}, Call: call, Output: st.State.GetReason(), Return: ret})
					}
					mu.Unlock()
				}
				cancel()
				if time.Since(begin).Nanoseconds()-call < int64(time.Millisecond) && ctx.Err() == context.Canceled && failed {
					time.Sleep(20 * time.Millisecond) // a node that is down answers at once
				}
			}
		}()
	}
	// Faults: cut one node off for 1.5 s, heal for 1 s; the leader every
	// other round; kill the leader once in the middle and restart it.
	for round := 0; round < 6; round++ {
		time.Sleep(time.Second)
		if round == 3 {
			li := c.LeaderIndex()
			t.Logf("+%v kill leader %s", time.Since(begin).Round(time.Millisecond), c.Nodes[li].ID)
			c.Kill(li)
			time.Sleep(1500 * time.Millisecond)
			c.Restart(li)
			continue
		}
		victim := (round + 1) % 3
		if round%2 == 0 {
			victim = c.LeaderIndex()
		}
		var rest []int
		for i := range c.Nodes {
			if i != victim {
				rest = append(rest, i)
			}
		}
		t.Logf("+%v cut off %s", time.Since(begin).Round(time.Millisecond), c.Nodes[victim].ID)
		c.Partition([]int{victim}, rest)
		time.Sleep(1500 * time.Millisecond)
		c.Heal()
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	t.Logf("%d operations: %d writes acknowledged, %d refused (nothing applied), %d of unknown outcome; %d reads, %d failed; errors %v",
		len(history), writesOK, writesNo, unknown, readsOK, readsFailed, errs)
	if writesOK < 50 || readsOK < 50 {
		t.Fatalf("too few operations completed to say anything (%d writes, %d reads)", writesOK, readsOK)
	}
	res, info := porcupine.CheckOperationsVerbose(registerModel, history, 60*time.Second)
	switch res {
	case porcupine.Ok:
	case porcupine.Unknown:
		t.Fatalf("the checker timed out on %d operations", len(history))
	default:
		path := filepath.Join(os.TempDir(), fmt.Sprintf("baldur-linearizability-%d.html", time.Now().UnixNano()))
		if err := porcupine.VisualizePath(registerModel, info, path); err != nil {
			t.Log(err)
		}
		t.Fatalf("the history is not linearizable; drawn in %s", path)
	}
}
