package baldur

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestStatsCountProtectRetryAndBreakerOutcomes(t *testing.T) {
	c := localClient(t)
	ctx := context.Background()
	retry := WithRetry[string](Retry{MaxAttempts: 3, BaseDelay: time.Millisecond})

	calls := 0
	ProtectWithMeta(ctx, c, "svc", failing(1, &calls), retry) // success on the 2nd attempt
	for range 5 {                                             // five exhausted ladders trip the local view
		calls = 0
		ProtectWithMeta(ctx, c, "svc", failing(100, &calls), retry)
	}
	calls = 0
	if r := ProtectWithMeta(ctx, c, "svc", failing(0, &calls), retry); r.Outcome != OutcomeRejected {
		t.Fatalf("expected a rejection, got %+v", r)
	}
	r := ProtectWithMeta(ctx, c, "other", failing(100, &calls), WithFallback(func(context.Context, error) (string, error) { return "cached", nil }))
	if r.Outcome != OutcomeFallback {
		t.Fatalf("fallback: %+v", r)
	}
	noRetry := WithRetry[string](Retry{MaxAttempts: 3, BaseDelay: time.Millisecond, RetryIf: func(err error) bool { return !errors.Is(err, errBoom) }})
	calls = 0
	ProtectWithMeta(ctx, c, "other", failing(100, &calls), noRetry) // refused at once: not a retried call

	st := c.Stats()
	p := st.Protect["svc"]
	if h := p.Attempts[OutcomeSuccess]; h.Count != 1 || h.Sum != 2 {
		t.Errorf("svc success attempts %+v, want one call of 2 attempts", h)
	}
	if h := p.Attempts[OutcomeFailure]; h.Count != 5 || h.Sum != 15 {
		t.Errorf("svc failure attempts %+v, want 5 calls of 3 attempts", h)
	}
	if h := p.Attempts[OutcomeRejected]; h.Count != 1 {
		t.Errorf("svc rejected %+v, want 1", h)
	}
	if d := p.Duration[OutcomeFailure]; d.Count != 5 || d.Sum <= 0 || d.Counts[len(d.Counts)-1] != 5 {
		t.Errorf("svc failure durations %+v", d)
	}
	rs := st.Retry["svc"]
	if rs.Started != 1+5*2 || rs.Outcomes[RetrySucceeded] != 1 || rs.Outcomes[RetryExhausted] != 5 || rs.Delay.Count != 11 {
		t.Errorf("svc retry stats %+v", rs)
	}
	if o := st.Protect["other"]; o.Fallbacks != 1 || o.Attempts[OutcomeFallback].Count != 1 || o.Attempts[OutcomeFailure].Count != 1 {
		t.Errorf("other protect stats %+v", o)
	}
	if rs := st.Retry["other"]; rs.Started != 0 || rs.Outcomes[RetryNonRetryable] != 0 {
		t.Errorf("a call refused before any retry counted as retried: %+v", rs)
	}
	if b := st.Breakers["svc"]; b.State != StateOpen || b.Blocked["open"] != 1 || b.Blocked["half_open_full"] != 0 {
		t.Errorf("svc breaker stats %+v", b)
	}
}

func TestHistogramBucketsAreCumulative(t *testing.T) {
	h := newHistogram([]float64{1, 2, 5}, 0.5)  // observed in halves
	for _, v := range []int64{1, 2, 3, 8, 18} { // 0.5, 1, 1.5, 4, 9
		h.observe(v)
	}
	s := h.snapshot()
	want := []uint64{2, 3, 4}
	for i := range want {
		if s.Counts[i] != want[i] {
			t.Fatalf("counts %v, want %v", s.Counts, want)
		}
	}
	if s.Count != 5 || s.Sum != 16 {
		t.Fatalf("count %d sum %v", s.Count, s.Sum)
	}
}

func TestHandlesReachTheSameState(t *testing.T) {
	c := localClient(t)
	if c.Circuits().Breaker("svc") != c.Breaker("svc") {
		t.Fatal("Circuits().Breaker and Breaker return different breakers")
	}
	if c.Circuits().KillSwitch() != c.KillSwitch() || c.Emergency() == nil || c.DLQ() == nil || c.Leases() == nil || c.Elections() == nil {
		t.Fatal("a handle is missing")
	}
}
