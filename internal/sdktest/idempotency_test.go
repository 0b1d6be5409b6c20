package sdktest_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/pgtest"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"github.com/baldurhq/baldurd/server"
)

// race runs n callers of one key at once, spread over the clients, and
// counts how many ran fn and how each call ended.
func race(t *testing.T, clients []*baldur.Client, n int, key string, fn func(context.Context) (int, error)) (ran int64, decisions map[string]int, errs []error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	decisions = map[string]int{}
	start := make(chan struct{})
	for i := range n {
		cl := clients[i%len(clients)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := baldur.Idempotent(ctxT(t), cl, key, func(ctx context.Context) (int, error) {
				atomic.AddInt64(&ran, 1)
				return fn(ctx)
			})
			mu.Lock()
			defer mu.Unlock()
			var dup *baldur.DuplicateError
			switch {
			case errors.As(err, &dup):
				decisions[dup.Decision]++
			case err == nil:
				decisions["ran ok"]++
			default:
				errs = append(errs, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	return ran, decisions, errs
}

// The gate across 3 nodes: 50 concurrent callers, exactly one runs; after
// it fails exactly one takes over; once done every caller gets the stored
// result; the leader killed during the run gives nobody a second run; an
// execution past its window is taken over (cluster clock).
// It runs against both stores: the replicated state and PostgreSQL.
func TestIdempotencyGate(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	t.Run("store=raft", func(t *testing.T) { gateSuite(t, testcluster.New(t, 3)) })
	t.Run("store=postgres", func(t *testing.T) {
		dsn := pgtest.Schema(t, "baldur_idem")
		gateSuite(t, testcluster.New(t, 3, testcluster.WithConfig(func(_ int, cfg *server.Config) {
			cfg.IdempotencyStore, cfg.PostgresDSN = "postgres", dsn
		})))
	})
}

func gateSuite(t *testing.T, c *testcluster.Cluster) {
	c.WaitForLeader(10 * time.Second)
	var clients []*baldur.Client
	for _, n := range c.Nodes {
		clients = append(clients, dialSDK(t, endpoints(c), baldur.WithInstanceID("idem-"+n.ID)))
	}
	hold := func(ctx context.Context) (int, error) { time.Sleep(200 * time.Millisecond); return 42, nil }

	ran, dec, errs := race(t, clients, 50, "order-1", hold)
	if ran != 1 || len(errs) != 0 || dec["ran ok"] != 1 || dec[baldur.DecisionAbort]+dec[baldur.DecisionSkip] != 49 {
		t.Fatalf("50 callers: %d ran, %v, errors %v", ran, dec, errs)
	}
	v, err := baldur.Idempotent(ctxT(t), clients[1], "order-1", hold)
	var dup *baldur.DuplicateError
	if !errors.As(err, &dup) || dup.Decision != baldur.DecisionSkip || v != 42 {
		t.Fatalf("after completion: %v %v, want SKIP with the stored 42", v, err)
	}

	// The runner fails: exactly one of the next racers takes over.
	ran, dec, _ = race(t, clients, 1, "order-2", func(context.Context) (int, error) { return 0, errors.New("payment provider down") })
	if ran != 1 {
		t.Fatalf("first run: %d", ran)
	}
	ran, dec, errs = race(t, clients, 50, "order-2", hold)
	if ran != 1 || dec["ran ok"] != 1 || len(errs) != 0 {
		t.Fatalf("takeover after a failure: %d ran, %v, %v", ran, dec, errs)
	}
	rec, err := pb.NewIdempotencyServiceClient(dialConn(t, c.Nodes[0].GRPCAddr)).GetIdempotency(ctxT(t), &pb.GetIdempotencyRequest{Key: "order-2"})
	if err != nil || rec.Status != "completed" || rec.RetryCount != 1 {
		t.Fatalf("record after the takeover: %v %v", rec, err)
	}

	// The leader is killed while the runner runs: nobody else runs it.
	killed := make(chan struct{})
	var once sync.Once
	ran, dec, errs = race(t, clients[:1], 1, "order-3", func(context.Context) (int, error) {
		once.Do(func() { c.Kill(c.LeaderIndex()); close(killed) })
		c.WaitForLeader(10 * time.Second)
		return 7, nil
	})
	<-killed
	if ran != 1 || len(errs) != 0 {
		t.Fatalf("run across the leader's loss: %d, %v, %v", ran, dec, errs)
	}
	var alive []*baldur.Client
	for i, n := range c.Nodes {
		if n.Running() {
			alive = append(alive, clients[i])
		}
	}
	ran, dec, errs = race(t, alive, 20, "order-3", hold)
	if ran != 0 || dec[baldur.DecisionSkip] != 20 {
		t.Fatalf("after the leader's loss: %d ran, %v, %v", ran, dec, errs)
	}

	// A stale execution (its window and the skew tolerance passed) is
	// taken over by exactly one caller.
	gate := pb.NewIdempotencyServiceClient(dialConn(t, c.Leader().GRPCAddr))
	if _, err := gate.AcquireIdempotency(ctxT(t), &pb.AcquireIdempotencyRequest{Key: "order-4"}); err != nil {
		t.Fatal(err)
	}
	ran, _, _ = race(t, alive, 10, "order-4", hold)
	if ran != 0 {
		t.Fatalf("%d ran while the first execution was fresh", ran)
	}
	c.Clock.Advance(1800*time.Second + 6*time.Second)
	ran, dec, errs = race(t, alive, 20, "order-4", hold)
	if ran != 1 || len(errs) != 0 {
		t.Fatalf("stale takeover: %d ran, %v, %v", ran, dec, errs)
	}
}

func TestIdempotencyBadInput(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := testcluster.New(t, 1)
	cl := dialSDK(t, c.Nodes[0].GRPCAddr)
	for _, key := range []string{"", "has space", string(make([]byte, 300))} {
		if _, err := baldur.Idempotent(ctxT(t), cl, key, func(context.Context) (int, error) { return 1, nil }); baldur.Reason(err) != "INVALID_ARGUMENT" {
			t.Errorf("key %q: %v", key, err)
		}
	}
	if _, err := baldur.Idempotent(ctxT(t), cl, "k", func(context.Context) (int, error) { return 1, nil }, baldur.WithExecutionTTL(8*24*time.Hour)); baldur.Reason(err) != "INVALID_ARGUMENT" {
		t.Errorf("an 8-day window: %v", err)
	}
}

// Protect's idempotency stage: inside the fallback, around the circuit and
// retry stages.
func TestProtectWithIdempotencyKey(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := testcluster.New(t, 1)
	cl := dialSDK(t, c.Nodes[0].GRPCAddr)
	calls := 0
	charge := func(context.Context) (string, error) { calls++; return "ch_1", nil }
	v, err := baldur.Protect(ctxT(t), cl, "psp", charge, baldur.WithIdempotencyKey[string]("order-9"), baldur.WithDefaultRetry[string]())
	if err != nil || v != "ch_1" || calls != 1 {
		t.Fatalf("first call: %q %v after %d calls", v, err, calls)
	}
	v, err = baldur.Protect(ctxT(t), cl, "psp", charge, baldur.WithIdempotencyKey[string]("order-9"))
	var dup *baldur.DuplicateError
	if !errors.As(err, &dup) || dup.Decision != baldur.DecisionSkip || v != "ch_1" || calls != 1 {
		t.Fatalf("second call: %q %v after %d calls, want SKIP with the stored ch_1", v, err, calls)
	}
	// A call running elsewhere (ABORT) reaches the fallback.
	gate := pb.NewIdempotencyServiceClient(dialConn(t, c.Nodes[0].GRPCAddr))
	if _, err := gate.AcquireIdempotency(ctxT(t), &pb.AcquireIdempotencyRequest{Key: "order-10"}); err != nil {
		t.Fatal(err)
	}
	r := baldur.ProtectWithMeta(ctxT(t), cl, "psp", charge, baldur.WithIdempotencyKey[string]("order-10"),
		baldur.WithFallback(func(_ context.Context, err error) (string, error) {
			if errors.As(err, &dup) && dup.Decision == baldur.DecisionAbort {
				return "pending", nil
			}
			return "", err
		}))
	if r.Err != nil || r.Value != "pending" || !r.FallbackUsed || calls != 1 {
		t.Fatalf("ABORT through the fallback: %+v after %d calls", r, calls)
	}
}

// c.Idempotency().Do: a call without a result, once across the fleet.
func TestIdempotencyDo(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := testcluster.New(t, 1)
	cl := dialSDK(t, c.Nodes[0].GRPCAddr)
	var sent atomic.Int32
	send := func(context.Context) error { sent.Add(1); return nil }
	if err := cl.Idempotency().Do(ctxT(t), "email-42", send); err != nil || sent.Load() != 1 {
		t.Fatalf("first: %v, sent %d", err, sent.Load())
	}
	var dup *baldur.DuplicateError
	if err := cl.Idempotency().Do(ctxT(t), "email-42", send); !errors.As(err, &dup) || dup.Decision != baldur.DecisionSkip || sent.Load() != 1 {
		t.Fatalf("second: %v, sent %d", err, sent.Load())
	}
	boom := errors.New("smtp down")
	if err := cl.Idempotency().Do(ctxT(t), "email-43", func(context.Context) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("a failing call: %v", err)
	}
	if err := cl.Idempotency().Do(ctxT(t), "email-43", send); err != nil || sent.Load() != 2 {
		t.Fatalf("after a failure the next call runs: %v, sent %d", err, sent.Load())
	}
	// Unreachable gate: fail-closed, unless fail-open.
	c.Kill(0)
	ctx, cancel := context.WithTimeout(ctxT(t), 2*time.Second)
	defer cancel()
	if err := cl.Idempotency().Do(ctx, "email-44", send); !errors.Is(err, baldur.ErrGateUnavailable) || sent.Load() != 2 {
		t.Fatalf("fail-closed: %v, sent %d", err, sent.Load())
	}
	ctx2, cancel2 := context.WithTimeout(ctxT(t), 2*time.Second)
	defer cancel2()
	if err := cl.Idempotency().Do(ctx2, "email-44", send, baldur.WithFailOpen()); err != nil || sent.Load() != 3 {
		t.Fatalf("fail-open: %v, sent %d", err, sent.Load())
	}
}
