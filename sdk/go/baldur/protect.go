package baldur

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// ErrTimeout is matched (errors.Is) when Protect's timeout ended the call.
var ErrTimeout = errors.New("baldur: timeout")

// ErrRetryExhausted is matched when every attempt failed; the error also
// unwraps to the last attempt's error.
var ErrRetryExhausted = errors.New("baldur: retries exhausted")

// RetryExhaustedError carries the attempts and the last error.
type RetryExhaustedError struct {
	Attempts int
	Reason   string // max_attempts, max_elapsed, deadline, non_retryable
	Last     error
}

func (e *RetryExhaustedError) Error() string {
	return fmt.Sprintf("baldur: %d attempts failed (%s): %v", e.Attempts, e.Reason, e.Last)
}

// Unwrap returns the last attempt's error and ErrRetryExhausted.
func (e *RetryExhaustedError) Unwrap() []error { return []error{e.Last, ErrRetryExhausted} }

// Backoff strategies.
type Backoff int

// Strategies (Baldur §3.2).
const (
	BackoffExponential Backoff = iota
	BackoffLinear
	BackoffConstant
	BackoffDecorrelated
)

// Retry configures the retry stage. MaxAttempts counts the first call.
type Retry struct {
	MaxAttempts int           // default 3
	Backoff     Backoff       // default exponential
	BaseDelay   time.Duration // first wait; default 1s
	MaxDelay    time.Duration // per-sleep cap; default 60s
	Multiplier  float64       // exponential; default 2
	Increment   time.Duration // linear; default = BaseDelay
	Jitter      float64       // capped jitter factor; default 0.2 for exponential, 0 otherwise; <0 disables
	MaxElapsed  time.Duration // total budget for attempts and sleeps; 0 = none
	// RetryIf decides whether an error is retried (default: all but
	// context cancellation and breaker rejections).
	RetryIf func(error) bool
}

func (r Retry) withDefaults() Retry {
	if r.MaxAttempts <= 0 {
		r.MaxAttempts = 3
	}
	if r.BaseDelay <= 0 {
		r.BaseDelay = time.Second
	}
	if r.MaxDelay <= 0 {
		r.MaxDelay = 60 * time.Second
	}
	if r.Multiplier <= 0 {
		r.Multiplier = 2
	}
	if r.Increment <= 0 {
		r.Increment = r.BaseDelay
	}
	if r.Jitter == 0 && r.Backoff == BackoffExponential {
		r.Jitter = 0.2
	}
	if r.Jitter < 0 {
		r.Jitter = 0
	}
	return r
}

// withBase fills the fields r leaves out from base, a complete Retry (the
// cluster's retry_defaults).
func (r Retry) withBase(base Retry) Retry {
	if r.MaxAttempts <= 0 {
		r.MaxAttempts = base.MaxAttempts
	}
	if r.Backoff == BackoffExponential {
		r.Backoff = base.Backoff
	}
	if r.BaseDelay <= 0 {
		r.BaseDelay = base.BaseDelay
	}
	if r.MaxDelay <= 0 {
		r.MaxDelay = base.MaxDelay
	}
	if r.Multiplier <= 0 {
		r.Multiplier = base.Multiplier
	}
	if r.Increment <= 0 {
		r.Increment = r.BaseDelay
	}
	if r.MaxElapsed == 0 {
		r.MaxElapsed = base.MaxElapsed
	}
	switch {
	case r.Jitter == 0:
		r.Jitter = base.Jitter
	case r.Jitter < 0:
		r.Jitter = 0
	}
	return r
}

// delay is the wait before retry number attempt (1 = first retry); prev is
// the previous delay (decorrelated).
func (r Retry) delay(attempt int, prev time.Duration) time.Duration {
	var raw float64
	switch r.Backoff {
	case BackoffLinear:
		raw = float64(r.BaseDelay) + float64(r.Increment)*float64(attempt-1)
	case BackoffConstant:
		raw = float64(r.BaseDelay)
	case BackoffDecorrelated:
		if attempt == 1 || prev <= 0 {
			raw = float64(r.BaseDelay)
		} else {
			lo, hi := float64(r.BaseDelay), float64(prev)*3
			raw = lo + rand.Float64()*math.Max(0, hi-lo)
		}
	default:
		raw = float64(r.BaseDelay) * math.Pow(r.Multiplier, float64(attempt-1))
	}
	maxD := float64(r.MaxDelay)
	if math.IsInf(raw, 0) || math.IsNaN(raw) || raw >= maxD {
		// Saturated: jitter only inward, never above the cap.
		return time.Duration(maxD - rand.Float64()*maxD*r.Jitter)
	}
	if r.Jitter > 0 {
		raw += (rand.Float64()*2 - 1) * raw * r.Jitter
	}
	return time.Duration(min(max(raw, 0), maxD))
}

// Outcome of a protected call.
type Outcome int

// Outcomes (Baldur's PolicyOutcome).
const (
	OutcomeSuccess Outcome = iota
	OutcomeFallback
	OutcomeRejected
	OutcomeFailure
	OutcomeTimeout
)

const outcomeCount = int(OutcomeTimeout) + 1

func (o Outcome) String() string {
	return [...]string{"success", "fallback", "rejected", "failure", "timeout"}[o]
}

// Result is what ProtectWithMeta returns.
type Result[T any] struct {
	Value        T
	Err          error
	Outcome      Outcome
	Attempts     int
	Duration     time.Duration
	FallbackUsed bool
	// DLQID is the id of the entry WithDLQ captured ("" if none).
	DLQID string
}

type protectConfig[T any] struct {
	timeout  time.Duration
	retry    *Retry
	fallback func(context.Context, error) (T, error)
	noBreak  bool
	dlq      *Entry
	idemKey  string
	idemOpts []IdempotencyOption
	// Admission stages by name ("" for none).
	rateLimit, bulkhead, throttle string
}

// ProtectOption configures Protect.
type ProtectOption[T any] func(*protectConfig[T])

// WithTimeout bounds the whole retry sequence (attempts and sleeps). The
// call's context carries the deadline; the function must honour it.
func WithTimeout[T any](d time.Duration) ProtectOption[T] {
	return func(c *protectConfig[T]) { c.timeout = d }
}

// WithRetry adds the retry stage. The fields r leaves out (zero) take the
// cluster's retry_defaults once it has set them (Config().RetryDefaults),
// the built-in defaults otherwise; a zero Backoff (exponential) counts as
// left out.
func WithRetry[T any](r Retry) ProtectOption[T] {
	return func(c *protectConfig[T]) { rr := r; c.retry = &rr }
}

// WithDefaultRetry adds the retry stage with the cluster's retry_defaults
// (the built-in defaults until the cluster sets them).
func WithDefaultRetry[T any]() ProtectOption[T] { return WithRetry[T](Retry{}) }

// WithFallback serves a value when the call fails, times out or is
// rejected. The breaker still counts the failure.
func WithFallback[T any](fb func(ctx context.Context, err error) (T, error)) ProtectOption[T] {
	return func(c *protectConfig[T]) { c.fallback = fb }
}

// WithDLQ captures a final failure that went through the retry stage
// (retries exhausted, Baldur §2.3) in the dead-letter queue under domain,
// with payload as request_data. Rejections, timeouts and calls the fallback
// served are not captured. The entry is stored (or spooled) before Protect
// returns; ProtectWithMeta reports its id in Result.DLQID.
func WithDLQ[T any](domain string, payload map[string]any) ProtectOption[T] {
	return func(c *protectConfig[T]) {
		e := &Entry{Domain: domain}
		if s, err := structpb.NewStruct(payload); err == nil {
			e.RequestData = s
		}
		c.dlq = e
	}
}

// WithIdempotencyKey runs the call at most once across the fleet for key
// (the cluster's idempotency gate, docs/idempotency.md). The stage sits
// inside the fallback (Baldur §2.3) and around the circuit, timeout and
// retry stages: a call the gate does not run returns a *DuplicateError
// (SKIP, with the stored result as the value; ABORT), which the fallback
// sees like any error.
func WithIdempotencyKey[T any](key string, opts ...IdempotencyOption) ProtectOption[T] {
	return func(c *protectConfig[T]) { c.idemKey, c.idemOpts = key, opts }
}

// WithRateLimit admits the call through the fleet-wide rate limit name
// (c.RateLimit): a refused call is REJECTED with a
// *RateLimitExceededError, which the fallback sees.
func WithRateLimit[T any](name string) ProtectOption[T] {
	return func(c *protectConfig[T]) { c.rateLimit = name }
}

// WithBulkhead runs the call holding a permit of the bulkhead name
// (c.Bulkhead), waiting up to its max_wait: a full bulkhead REJECTS the
// call with a *BulkheadFullError, which the fallback sees.
func WithBulkhead[T any](name string) ProtectOption[T] {
	return func(c *protectConfig[T]) { c.bulkhead = name }
}

// WithThrottle admits the call through the adaptive throttle name
// (c.Throttle) and records its round trip time: a refused call is
// REJECTED with a *ThrottledError, which the fallback sees.
func WithThrottle[T any](name string) ProtectOption[T] {
	return func(c *protectConfig[T]) { c.throttle = name }
}

// WithoutBreaker skips the circuit stage.
func WithoutBreaker[T any]() ProtectOption[T] { return func(c *protectConfig[T]) { c.noBreak = true } }

// Protect runs fn through fallback → rate limit → bulkhead → throttle →
// circuit → timeout → retry (Baldur §2.3, with the admission stages
// first, so a call refused admission costs no breaker probe and is not a
// breaker failure): a rejected call is never retried, one exhausted retry
// sequence is one breaker failure, the timeout covers every attempt and
// sleep, and the fallback sees retry exhaustion, timeouts and rejections.
// A rate limit, bulkhead or throttle the cluster does not have is a
// *NotConfiguredError before any stage runs, the fallback included.
func Protect[T any](ctx context.Context, c *Client, name string, fn func(context.Context) (T, error), opts ...ProtectOption[T]) (T, error) {
	r := ProtectWithMeta(ctx, c, name, fn, opts...)
	return r.Value, r.Err
}

// ProtectWithMeta is Protect returning the outcome, attempts, duration and
// whether the fallback served.
func ProtectWithMeta[T any](ctx context.Context, c *Client, name string, fn func(context.Context) (T, error), opts ...ProtectOption[T]) Result[T] {
	var cfg protectConfig[T]
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.rateLimit != "" || cfg.bulkhead != "" || cfg.throttle != "" {
		if err := c.admission.check(ctx, cfg.rateLimit, cfg.bulkhead, cfg.throttle); err != nil {
			return Result[T]{Err: err, Outcome: OutcomeRejected}
		}
	}
	if cfg.idemKey != "" {
		return protectIdempotent(ctx, c, name, fn, cfg)
	}
	return protectWith(ctx, c, name, fn, cfg)
}

// protectIdempotent is Protect with the idempotency stage: the gate around
// the circuit, timeout and retry stages, the fallback and DLQ capture
// outside it.
func protectIdempotent[T any](ctx context.Context, c *Client, name string, fn func(context.Context) (T, error), cfg protectConfig[T]) Result[T] {
	start := time.Now()
	inner := cfg
	inner.idemKey, inner.fallback, inner.dlq = "", nil, nil
	var res Result[T]
	ran := false
	v, err := Idempotent(ctx, c, cfg.idemKey, func(ctx context.Context) (T, error) {
		ran = true
		res = protectWith(ctx, c, name, fn, inner)
		return res.Value, res.Err
	}, cfg.idemOpts...)
	if !ran {
		res = Result[T]{Value: v, Err: err, Outcome: OutcomeRejected}
	} else if res.Err == nil && err != nil {
		res.Err = err // it ran, but its completion was not recorded
	}
	res = finish(ctx, cfg, res, start)
	if cfg.dlq != nil && res.Outcome == OutcomeFailure && cfg.retry != nil {
		res = captureExhausted(ctx, c, cfg, res)
	}
	return res
}

// protectWith is the pipeline of fallback, circuit, timeout and retry.
func protectWith[T any](ctx context.Context, c *Client, name string, fn func(context.Context) (T, error), cfg protectConfig[T]) Result[T] {
	start := time.Now()
	res := Result[T]{}
	var b *Breaker
	var st *callStats
	if cfg.rateLimit != "" || cfg.bulkhead != "" || cfg.throttle != "" {
		bh, th, err := c.admission.admit(ctx, cfg.rateLimit, cfg.bulkhead, cfg.throttle)
		if err != nil {
			res.Outcome, res.Err = OutcomeRejected, err
			res = finish(ctx, cfg, res, start)
			c.calls.of(name).call(res.Outcome, res.Attempts, res.Duration)
			return res
		}
		defer c.admission.done(bh, th, start)
	}
	if !cfg.noBreak && !c.killSwitch.Load() {
		b = c.Breaker(name)
		st = b.calls
		if err := b.Allow(); err != nil {
			res.Outcome, res.Err = OutcomeRejected, err
			res = finish(ctx, cfg, res, start)
			st.call(res.Outcome, res.Attempts, res.Duration)
			return res
		}
	}
	if st == nil {
		st = c.calls.of(name)
	}
	callCtx := ctx
	if cfg.timeout > 0 {
		var cancel context.CancelFunc
		callCtx, cancel = context.WithTimeout(ctx, cfg.timeout)
		defer cancel()
	}
	switch {
	case cfg.retry != nil && c.killSwitch.Load():
		cfg.retry = nil // the system is disabled: no automatic retries
	case cfg.retry != nil:
		r := c.config.retryFor(*cfg.retry)
		cfg.retry = &r
	}
	res.Value, res.Attempts, res.Err = runAttempts(callCtx, cfg.retry, fn, st)
	res.Outcome = OutcomeSuccess
	if res.Err != nil {
		res.Outcome = OutcomeFailure
		if cfg.timeout > 0 && errors.Is(callCtx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
			res.Outcome = OutcomeTimeout
			res.Err = fmt.Errorf("%w after %v: %w", ErrTimeout, cfg.timeout, res.Err)
		}
	}
	if b != nil {
		b.record(res.Err, time.Since(start))
	}
	res = finish(ctx, cfg, res, start)
	st.call(res.Outcome, res.Attempts, res.Duration)
	// The DLQ sink sees the whole pipeline's outcome: a call the fallback
	// served is not captured.
	if cfg.dlq != nil && res.Outcome == OutcomeFailure && cfg.retry != nil {
		res = captureExhausted(ctx, c, cfg, res)
	}
	return res
}

// captureExhausted stores a call whose retries ran out in the DLQ (its own
// function, so the success path allocates nothing for it).
func captureExhausted[T any](ctx context.Context, c *Client, cfg protectConfig[T], res Result[T]) Result[T] {
	var exhausted *RetryExhaustedError
	if errors.As(res.Err, &exhausted) {
		e := proto.Clone(cfg.dlq).(*Entry)
		e.Id = NewEntryID()
		e.FailureType = "MAX_RETRIES_" + errorClass(exhausted.Last)
		e.ErrorCode = errorClass(exhausted.Last)
		e.ErrorMessage = exhausted.Last.Error()
		e.NextActionHint = "Review error and retry if transient"
		e.RecommendedAction = "manual_check"
		if r, err := c.DLQ().Store(context.WithoutCancel(ctx), e); err == nil {
			res.DLQID = r.ID
		}
	}
	return res
}

// errorClass names an error's type for failure_type, as Baldur uses the
// exception class name ("*net.OpError" → "NET_OPERROR").
func errorClass(err error) string {
	name := strings.TrimPrefix(fmt.Sprintf("%T", err), "*")
	return strings.ToUpper(strings.NewReplacer(".", "_", "*", "").Replace(name))
}

func finish[T any](ctx context.Context, cfg protectConfig[T], res Result[T], start time.Time) Result[T] {
	if res.Err != nil && cfg.fallback != nil && ctx.Err() == nil {
		if v, err := cfg.fallback(ctx, res.Err); err == nil {
			res.Value, res.Err, res.FallbackUsed, res.Outcome = v, nil, true, OutcomeFallback
		} else {
			res.Err = err // the fallback declined
		}
	}
	res.Duration = time.Since(start)
	return res
}

func retryable(r *Retry, err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrCircuitOpen) {
		return false
	}
	if r.RetryIf != nil {
		return r.RetryIf(err)
	}
	return true
}

// runAttempts runs the retry stage, counting retries in st.
func runAttempts[T any](ctx context.Context, r *Retry, fn func(context.Context) (T, error), st *callStats) (T, int, error) {
	start := time.Now() // MaxElapsed counts from the first attempt
	v, err := fn(ctx)
	if err == nil || r == nil {
		return v, 1, err
	}
	v, attempts, err := retryAttempts(ctx, r, fn, v, err, st, start)
	if attempts > 1 {
		var ex *RetryExhaustedError
		switch {
		case err == nil:
			st.retried(RetrySucceeded)
		case errors.As(err, &ex) && ex.Reason == "non_retryable":
			st.retried(RetryNonRetryable)
		default:
			st.retried(RetryExhausted)
		}
	}
	return v, attempts, err
}

func retryAttempts[T any](ctx context.Context, r *Retry, fn func(context.Context) (T, error), v T, err error, st *callStats, start time.Time) (T, int, error) {
	budget := r.MaxElapsed
	var prev time.Duration
	for attempt := 1; ; attempt++ {
		reason := ""
		switch {
		case !retryable(r, err):
			reason = "non_retryable"
		case attempt >= r.MaxAttempts:
			reason = "max_attempts"
		}
		if reason != "" {
			if attempt == 1 && reason == "non_retryable" {
				return v, attempt, err
			}
			return v, attempt, &RetryExhaustedError{Attempts: attempt, Reason: reason, Last: err}
		}
		d := r.delay(attempt, prev)
		prev = d
		if budget > 0 && time.Since(start)+d > budget {
			return v, attempt, &RetryExhaustedError{Attempts: attempt, Reason: "max_elapsed", Last: err}
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
			return v, attempt, &RetryExhaustedError{Attempts: attempt, Reason: "deadline", Last: err}
		}
		st.retryStarted.Add(1)
		st.retryDelay.observe(int64(d))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return v, attempt, &RetryExhaustedError{Attempts: attempt, Reason: "deadline", Last: ctx.Err()}
		case <-t.C:
		}
		if v, err = fn(ctx); err == nil {
			return v, attempt + 1, nil
		}
	}
}
