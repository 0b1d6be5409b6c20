package baldur

import (
	"context"
	"errors"
	"testing"
	"time"
)

var errBoom = errors.New("boom")

// localClient is a client whose cluster is unreachable: breakers run on
// their local view only.
func localClient(t *testing.T, opts ...Option) *Client {
	t.Helper()
	c, err := Dial(context.Background(), "127.0.0.1:1", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func failing(n int, calls *int) func(context.Context) (string, error) {
	return func(context.Context) (string, error) {
		*calls++
		if *calls <= n {
			return "", errBoom
		}
		return "ok", nil
	}
}

func TestProtectRetriesUntilSuccess(t *testing.T) {
	c := localClient(t)
	calls := 0
	r := ProtectWithMeta(context.Background(), c, "svc", failing(2, &calls), WithRetry[string](Retry{MaxAttempts: 3, BaseDelay: time.Millisecond}))
	if r.Err != nil || r.Value != "ok" || r.Attempts != 3 || r.Outcome != OutcomeSuccess || calls != 3 {
		t.Fatalf("result %+v after %d calls", r, calls)
	}
}

func TestOneExhaustedRetryLadderIsOneBreakerFailure(t *testing.T) {
	c := localClient(t)
	b := c.Breaker("svc") // local defaults: 5 consecutive failures trip
	for i := 1; i <= 5; i++ {
		calls := 0
		r := ProtectWithMeta(context.Background(), c, "svc", failing(100, &calls), WithRetry[string](Retry{MaxAttempts: 3, BaseDelay: time.Millisecond}))
		if !errors.Is(r.Err, errBoom) || !errors.Is(r.Err, ErrRetryExhausted) || r.Attempts != 3 || r.Outcome != OutcomeFailure {
			t.Fatalf("call %d: %+v", i, r)
		}
		if want := map[bool]State{true: StateOpen, false: StateClosed}[i == 5]; b.LocalState() != want {
			t.Fatalf("after %d failed ladders the local view is %v, want %v", i, b.LocalState(), want)
		}
	}
	calls := 0
	r := ProtectWithMeta(context.Background(), c, "svc", failing(0, &calls), WithRetry[string](Retry{MaxAttempts: 3, BaseDelay: time.Millisecond}))
	var coe *CircuitOpenError
	if !errors.As(r.Err, &coe) || coe.Fleet || r.Outcome != OutcomeRejected || calls != 0 || r.Attempts != 0 {
		t.Fatalf("rejected call: %+v, %d calls", r, calls)
	}
}

func TestTimeoutCoversTheWholeRetrySequence(t *testing.T) {
	c := localClient(t)
	calls := 0
	fn := func(ctx context.Context) (int, error) {
		calls++
		select {
		case <-time.After(20 * time.Millisecond):
			return 0, errBoom
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	start := time.Now()
	r := ProtectWithMeta(context.Background(), c, "slow", fn, WithTimeout[int](70*time.Millisecond),
		WithRetry[int](Retry{MaxAttempts: 10, BaseDelay: 10 * time.Millisecond, Backoff: BackoffConstant}))
	if !errors.Is(r.Err, ErrTimeout) || r.Outcome != OutcomeTimeout {
		t.Fatalf("result %+v", r)
	}
	if took := time.Since(start); took > 500*time.Millisecond || calls < 2 || calls > 4 {
		t.Fatalf("took %v over %d calls", took, calls)
	}
}

func TestFallbackServesFailuresAndRejections(t *testing.T) {
	c := localClient(t)
	fb := WithFallback[string](func(_ context.Context, err error) (string, error) { return "cached", nil })
	calls := 0
	r := ProtectWithMeta(context.Background(), c, "fb", failing(100, &calls), fb)
	if r.Err != nil || r.Value != "cached" || !r.FallbackUsed || r.Outcome != OutcomeFallback {
		t.Fatalf("failure with fallback: %+v", r)
	}
	for i := 0; i < 5; i++ { // the breaker still counts the failures
		Protect(context.Background(), c, "fb", failing(100, &calls), fb)
	}
	if c.Breaker("fb").LocalState() != StateOpen {
		t.Fatal("fallback hid failures from the breaker")
	}
	before := calls
	v, err := Protect(context.Background(), c, "fb", failing(0, &calls), fb)
	if err != nil || v != "cached" || calls != before {
		t.Fatalf("rejection with fallback: %q %v (fn called %d times)", v, err, calls-before)
	}
	declined := errors.New("no cache")
	_, err = Protect(context.Background(), c, "fb", failing(100, &calls), WithFallback[string](func(context.Context, error) (string, error) { return "", declined }))
	if !errors.Is(err, declined) {
		t.Fatalf("declining fallback: %v", err)
	}
}

func TestCancellationAndIgnoredErrorsDoNotCount(t *testing.T) {
	errNotFound := errors.New("not found")
	c := localClient(t, WithIgnoredErrors(errNotFound))
	b := c.Breaker("svc")
	for i := 0; i < 20; i++ {
		if err := b.Allow(); err != nil {
			t.Fatalf("call %d rejected: %v", i, err)
		}
		b.Record([]error{context.Canceled, errNotFound}[i%2])
	}
	if b.LocalState() != StateClosed {
		t.Fatal("cancellations or ignored errors tripped the breaker")
	}
}

func TestTwoStepFormCountsSlowCalls(t *testing.T) {
	c := localClient(t)
	b := c.Breaker("async")
	b.lastLocalPolicy.Load().slowCall = 5 * time.Millisecond
	p, err := b.Begin()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	p.End(nil)
	if got := b.slow.Load(); got != 1 {
		t.Fatalf("slow calls counted: %d, want 1", got)
	}
}

func TestBackoffFormulas(t *testing.T) {
	exp := Retry{BaseDelay: time.Second, MaxDelay: 10 * time.Second, Jitter: -1}.withDefaults()
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second} {
		if got := exp.delay(attempt, 0); got != want {
			t.Errorf("exponential attempt %d = %v, want %v", attempt, got, want)
		}
	}
	lin := Retry{Backoff: BackoffLinear, BaseDelay: time.Second, Increment: 500 * time.Millisecond}.withDefaults()
	if got := lin.delay(3, 0); got != 2*time.Second {
		t.Errorf("linear attempt 3 = %v", got)
	}
	if got := (Retry{Backoff: BackoffConstant, BaseDelay: 5 * time.Second}).withDefaults().delay(7, 0); got != 5*time.Second {
		t.Errorf("constant = %v", got)
	}
	jit := Retry{BaseDelay: time.Second, MaxDelay: 4 * time.Second, Jitter: 0.2}.withDefaults()
	for i := 0; i < 1000; i++ {
		if d := jit.delay(1, 0); d < 800*time.Millisecond || d > 1200*time.Millisecond {
			t.Fatalf("jittered first delay %v outside ±20%%", d)
		}
		if d := jit.delay(10, 0); d > 4*time.Second || d < time.Duration(float64(4*time.Second)*0.8) {
			t.Fatalf("saturated delay %v not within [0.8·max, max]", d)
		}
		dec := Retry{Backoff: BackoffDecorrelated, BaseDelay: time.Second, MaxDelay: 30 * time.Second, Jitter: -1}.withDefaults()
		if d := dec.delay(3, 2*time.Second); d < time.Second || d > 6*time.Second {
			t.Fatalf("decorrelated delay %v outside [base, 3·prev]", d)
		}
	}
}

func TestRetryBudgetsStopEarly(t *testing.T) {
	c := localClient(t)
	calls := 0
	r := ProtectWithMeta(context.Background(), c, "budget", failing(100, &calls),
		WithRetry[string](Retry{MaxAttempts: 10, BaseDelay: 40 * time.Millisecond, Backoff: BackoffConstant, MaxElapsed: 100 * time.Millisecond}))
	var re *RetryExhaustedError
	if !errors.As(r.Err, &re) || re.Reason != "max_elapsed" || calls > 3 {
		t.Fatalf("result %+v after %d calls", r, calls)
	}
	calls = 0
	permanent := errors.New("bad request")
	r = ProtectWithMeta(context.Background(), c, "budget2", func(context.Context) (string, error) { calls++; return "", permanent },
		WithRetry[string](Retry{MaxAttempts: 5, BaseDelay: time.Millisecond, RetryIf: func(err error) bool { return !errors.Is(err, permanent) }}))
	if calls != 1 || !errors.Is(r.Err, permanent) {
		t.Fatalf("non-retryable error retried: %d calls, %v", calls, r.Err)
	}
}

// MaxElapsed bounds the whole call, the first attempt included: a first
// attempt that takes the whole budget leaves no room for a retry.
func TestRetryMaxElapsedCountsFromTheFirstAttempt(t *testing.T) {
	c := localClient(t)
	calls := 0
	slowFail := func(context.Context) (string, error) {
		calls++
		time.Sleep(60 * time.Millisecond)
		return "", errBoom
	}
	r := ProtectWithMeta(context.Background(), c, "slow", slowFail, WithRetry[string](Retry{MaxAttempts: 5, BaseDelay: 10 * time.Millisecond, MaxElapsed: 50 * time.Millisecond}))
	var ex *RetryExhaustedError
	if !errors.As(r.Err, &ex) || ex.Reason != "max_elapsed" || calls != 1 {
		t.Fatalf("after a first attempt longer than MaxElapsed: %v, %d calls", r.Err, calls)
	}
}
