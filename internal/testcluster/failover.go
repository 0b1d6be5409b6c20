package testcluster

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// FailoverResult is what writers saw around one fault.
type FailoverResult struct {
	// FirstAck is the time from the fault to the first acknowledgement of
	// a write sent after it.
	FirstAck time.Duration
	OK       int
	// Failed counts writes answered with an error; Refused holds the
	// reasons (the writes' Reason text) of those answered with a
	// definite failure (NO_LEADER, NOT_LEADER, LEADER_UNREACHABLE,
	// LEADER_NOT_READY), which must not have applied.
	Failed  int
	Refused []string
	Errors  map[string]int
}

// FailoverTrial runs one writer per address, each sending emergency
// triggers (scope "fo-<trial>-<writer>", a unique reason and request id per
// write, a 5 s deadline) in a loop, with plain gRPC connections so that
// only the server's failover is measured. fault runs 200 ms in, and the
// time is counted from its return; the
// writers stop 1 s after the first write sent after the fault is
// acknowledged (or after 15 s).
func FailoverTrial(t testing.TB, trial int, addrs []string, fault func()) FailoverResult {
	t.Helper()
	var (
		mu       sync.Mutex
		res      = FailoverResult{Errors: map[string]int{}}
		faultAt  time.Time
		firstAck = make(chan time.Time, 1)
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for w, addr := range addrs {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		em := pb.NewEmergencyServiceClient(conn)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				reason := fmt.Sprintf("fo-%d-%d-%d", trial, w, n)
				sent := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				ctx = metadata.AppendToOutgoingContext(ctx, "baldur-request-id", reason)
				_, err := em.TriggerEmergency(ctx, &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_1, Scope: fmt.Sprintf("fo-%d-%d", trial, w), Reason: reason})
				cancel()
				mu.Lock()
				switch r := baldur.Reason(err); {
				case err == nil:
					res.OK++
					if !faultAt.IsZero() && sent.After(faultAt) {
						select {
						case firstAck <- time.Now():
						default:
						}
					}
				case NothingApplied(err):
					res.Failed++
					res.Refused = append(res.Refused, reason)
					res.Errors[r]++
				default:
					res.Failed++
					res.Errors[r]++
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	fault()
	mu.Lock()
	faultAt = time.Now() // once the fault is complete (a killed node is gone)
	mu.Unlock()
	select {
	case at := <-firstAck:
		res.FirstAck = at.Sub(faultAt)
		time.Sleep(time.Second)
	case <-time.After(15 * time.Second):
		res.FirstAck = -1
	}
	close(stop)
	wg.Wait()
	return res
}

// NothingApplied reports whether a failed write's reason says it did not
// apply: no leader took it (docs/api.md, "Errors").
func NothingApplied(err error) bool {
	switch baldur.Reason(err) {
	case "NO_LEADER", "NOT_LEADER", "LEADER_UNREACHABLE", "LEADER_NOT_READY":
		return true
	}
	return false
}

// Percentile is the p-th percentile (0..100) of ds, nearest rank.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p/100*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// AuditReasons counts a node's audit records of one action by reason.
func AuditReasons(t testing.TB, addr, action string) map[string]int {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	audit := pb.NewAuditServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := map[string]int{}
	for page := ""; ; {
		r, err := audit.ListAudit(ctx, &pb.ListAuditRequest{Action: action, PageSize: 1000, PageToken: page})
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range r.Records {
			out[rec.Reason]++
		}
		if page = r.NextPageToken; page == "" {
			return out
		}
	}
}
