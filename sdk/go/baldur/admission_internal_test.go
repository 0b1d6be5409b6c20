package baldur

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/types/known/durationpb"
)

// offline is a client that never connects: its admission handles are fed
// shares and configuration directly.
func offline(t testing.TB) *Client {
	c, err := Dial(context.Background(), "127.0.0.1:1", WithInstanceID("offline"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRateLimiterAdmitsItsShareWithItsBurst(t *testing.T) {
	c := offline(t)
	r := c.RateLimit("api")
	if r.Allow() {
		t.Fatal("admitted before any share")
	}
	r.grant(100, 5, time.Now().Add(time.Minute), 2) // 100/s, bursts of 5
	n := 0
	for r.Allow() {
		n++
	}
	if n != 5 {
		t.Fatalf("burst: %d admitted, want 5", n)
	}
	var ex *RateLimitExceededError
	if err := r.exceeded(); !errors.As(err, &ex) || ex.Limit != 100 || time.Until(ex.ResetAt) > 25*time.Millisecond {
		t.Fatalf("exceeded: %v", err)
	}
	time.Sleep(50 * time.Millisecond) // ~5 more tokens
	n = 0
	for r.Allow() {
		n++
	}
	if n < 4 || n > 6 {
		t.Fatalf("after 50 ms at 100/s: %d admitted", n)
	}
	// The lease ends without renewal: the equal share of the fleet last
	// seen (1000/s over 2 instances, capped by the last share 100/s).
	c.config.apply(&pb.RuntimeConfig{RateLimits: map[string]*pb.RateLimitConfig{"api": {Rate: 1000, Per: durationpb.New(time.Second), Burst: 10}}})
	r.expire(time.Now().Add(2 * time.Minute))
	if r.Share() != 100 {
		t.Fatalf("fallback share %v, want the last share 100", r.Share())
	}
	c.config.apply(&pb.RuntimeConfig{RateLimits: map[string]*pb.RateLimitConfig{"api": {Rate: 1000, Per: durationpb.New(time.Second), Burst: 10, FallbackRate: 20}}})
	r.expire(time.Now().Add(2 * time.Minute))
	if r.Share() != 20 {
		t.Fatalf("fallback share %v, want the configured 20", r.Share())
	}
	// Removed from the configuration: nothing admitted.
	c.config.apply(&pb.RuntimeConfig{})
	if r.Allow() || r.Share() != 0 {
		t.Fatal("a removed limit still admits")
	}
}

func TestBulkheadWaitsThenRejects(t *testing.T) {
	c := offline(t)
	c.config.apply(&pb.RuntimeConfig{Bulkheads: map[string]*pb.BulkheadConfig{"db": {MaxConcurrent: 2, MaxWait: durationpb.New(100 * time.Millisecond)}}})
	b := c.Bulkhead("db")
	if !b.TryAcquire() || !b.TryAcquire() || b.TryAcquire() {
		t.Fatal("two permits")
	}
	go func() { time.Sleep(30 * time.Millisecond); b.Release() }()
	start := time.Now()
	if err := b.Acquire(context.Background()); err != nil || time.Since(start) < 25*time.Millisecond {
		t.Fatalf("a waiter gets the released permit: %v after %v", err, time.Since(start))
	}
	var full *BulkheadFullError
	if err := b.Acquire(context.Background()); !errors.As(err, &full) || full.Max != 2 || full.Active != 2 {
		t.Fatalf("full: %v", err)
	}
	st := b.State()
	if st.Active != 2 || st.Rejected != 2 || st.UtilizationPercent != 100 {
		t.Fatalf("state %+v", st)
	}
	// A larger capacity, pushed by the cluster, admits at once.
	c.config.apply(&pb.RuntimeConfig{Bulkheads: map[string]*pb.BulkheadConfig{"db": {MaxConcurrent: 3}}})
	if !b.TryAcquire() {
		t.Fatal("the new capacity")
	}
	var nc *NotConfiguredError
	if err := c.Bulkhead("nope").Acquire(context.Background()); !errors.As(err, &nc) {
		t.Fatalf("unknown: %v", err)
	}
}

func TestThrottleFollowsTheRoundTrips(t *testing.T) {
	c := offline(t)
	c.config.apply(&pb.RuntimeConfig{Throttles: map[string]*pb.ThrottleConfig{"psp": {InitialLimit: 100, MinLimit: 10, MaxLimit: 200,
		Window: durationpb.New(time.Minute), SampleInterval: durationpb.New(time.Second), SmoothingFactor: 0.5, DecreaseRatio: 0.9, IncreaseStep: 1,
		SlaWarning: durationpb.New(200 * time.Millisecond), SlaCritical: durationpb.New(500 * time.Millisecond), CbOpenLimitPercent: 0,
		CbHalfOpenLimitPercent: 0.5, Level1Multiplier: 0.8, Level2Multiplier: 0.5, RecoveryStepInterval: durationpb.New(30 * time.Second)}}})
	th := c.Throttle("psp")
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	th.now = func() time.Time { return now }
	sample := func(rtt time.Duration) ThrottleState {
		th.Record(rtt)
		now = now.Add(time.Second)
		th.Record(rtt)
		return th.State()
	}
	if st := sample(50 * time.Millisecond); st.Limit != 101 || st.Regime != RegimeNormal {
		t.Fatalf("fast calls raise the limit: %+v", st)
	}
	if st := sample(600 * time.Millisecond); st.Limit != 70 || st.Regime != RegimeThrottling {
		t.Fatalf("a critical round trip cuts 30 %%: %+v", st)
	}
	if st := sample(300 * time.Millisecond); st.Limit > 70 || st.Limit < 60 {
		t.Fatalf("a warning eases down 10 %%: %+v", st)
	}
	for range 3 {
		sample(20 * time.Millisecond)
	}
	if st := th.State(); st.Regime != RegimeRecovering {
		t.Fatalf("back within the SLA, below the initial limit: %+v", st)
	}
	// The window's count reaches the limit: refused.
	limit := th.State().Limit
	for range limit {
		if !th.Allow() {
			t.Fatal("refused within the limit")
		}
	}
	if th.Allow() {
		t.Fatal("admitted beyond the limit")
	}
	var te *ThrottledError
	if err := th.check(); !errors.As(err, &te) {
		t.Fatalf("check: %v", err)
	}
	// A breaker OPEN clamps to the floor; HALF_OPEN halves.
	b := c.Breaker("psp")
	b.openLocal()
	if st := th.State(); st.Limit != 10 || st.Regime != RegimeThrottling {
		t.Fatalf("breaker open: %+v", st)
	}
	b.local.state.Store(int32(StateHalfOpen))
	base := th.State().Base
	if st := th.State(); math.Abs(float64(st.Limit)-float64(base)/2) > 1 {
		t.Fatalf("breaker half-open: %+v", st)
	}
	// The breaker closes: the limit recovers in steps of 80 %, 90 %, 100 %.
	b.local.state.Store(int32(StateClosed))
	for _, step := range []struct {
		after time.Duration
		share float64
	}{{0, 0.8}, {30 * time.Second, 0.9}, {30 * time.Second, 1}} {
		now = now.Add(step.after)
		if st := th.State(); math.Abs(float64(st.Limit)-float64(base)*step.share) > 1 || st.Regime != RegimeRecovering {
			t.Fatalf("recovery at %v of the limit: %+v", step.share, st)
		}
	}
}

// BenchmarkRateLimitAllow is one admission decision: baldurd's share
// bucket beside golang.org/x/time/rate at the same rate and burst (the
// rate high enough that every call is admitted).
func BenchmarkRateLimitAllow(b *testing.B) {
	b.Run("baldurd", func(b *testing.B) {
		c := offline(b)
		r := c.RateLimit("api")
		r.grant(1e9, 1000, time.Now().Add(time.Hour), 1)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r.Allow()
			}
		})
	})
	b.Run("xtimerate", func(b *testing.B) {
		l := rate.NewLimiter(rate.Limit(1e9), 1000)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l.Allow()
			}
		})
	})
}

// BenchmarkBulkhead is a permit taken and given back.
func BenchmarkBulkhead(b *testing.B) {
	c := offline(b)
	c.config.apply(&pb.RuntimeConfig{Bulkheads: map[string]*pb.BulkheadConfig{"db": {MaxConcurrent: 1 << 20}}})
	h := c.Bulkhead("db")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if h.TryAcquire() {
				h.Release()
			}
		}
	})
}
