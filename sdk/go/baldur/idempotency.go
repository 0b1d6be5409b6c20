package baldur

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Gate decisions (Baldur §6.3).
const (
	DecisionContinue = "CONTINUE"
	DecisionSkip     = "SKIP"
	DecisionAbort    = "ABORT"
)

// ErrGateUnavailable is an idempotent call not made because the cluster's
// gate could not be reached (fail-closed; WithFailOpen runs it instead).
var ErrGateUnavailable = errors.New("baldur: the idempotency gate is unreachable")

// DuplicateError is an idempotent call the gate did not run: SKIP (done
// already; Idempotent returns the stored result with it) or ABORT (running
// elsewhere).
type DuplicateError struct {
	Key        string
	Decision   string
	RetryCount int
}

func (e *DuplicateError) Error() string {
	if e.Decision == DecisionSkip {
		return fmt.Sprintf("baldur: %q was done already (the stored result is returned)", e.Key)
	}
	return fmt.Sprintf("baldur: %q is being run elsewhere", e.Key)
}

type idemConfig struct {
	execTTL, memTTL time.Duration
	failOpen        bool
}

// IdempotencyOption configures one idempotent call.
type IdempotencyOption func(*idemConfig)

// WithExecutionTTL is how long the call may run before another caller may
// take the key over (default 1800 s, plus 5 s of clock-skew tolerance).
func WithExecutionTTL(d time.Duration) IdempotencyOption {
	return func(c *idemConfig) { c.execTTL = d }
}

// WithMemoryTTL is how long the outcome is remembered (default 1800 s).
func WithMemoryTTL(d time.Duration) IdempotencyOption { return func(c *idemConfig) { c.memTTL = d } }

// WithFailOpen runs the call when the gate cannot be reached (§6.4): at
// the risk of running it twice. Without it such a call fails closed with
// ErrGateUnavailable.
func WithFailOpen() IdempotencyOption { return func(c *idemConfig) { c.failOpen = true } }

// Idempotent runs fn at most once across the fleet for key (Baldur §6):
// the cluster's gate answers CONTINUE to exactly one caller, which runs fn
// and records its result (as JSON, at most 4 KiB) or its failure; a
// failed or stale execution is taken over by exactly one later caller.
// Others get a *DuplicateError: SKIP with the stored result, or ABORT.
func Idempotent[T any](ctx context.Context, c *Client, key string, fn func(context.Context) (T, error), opts ...IdempotencyOption) (T, error) {
	var zero T
	var cfg idemConfig
	for _, o := range opts {
		o(&cfg)
	}
	gate := pb.NewIdempotencyServiceClient(c.conn)
	req := &pb.AcquireIdempotencyRequest{Key: key}
	if cfg.execTTL > 0 {
		req.ExecutionTtl = durationpb.New(cfg.execTTL)
	}
	if cfg.memTTL > 0 {
		req.MemoryTtl = durationpb.New(cfg.memTTL)
	}
	resp, err := gate.AcquireIdempotency(c.callContext(ctx), req)
	if err != nil {
		if Reason(err) == "INVALID_ARGUMENT" || !cfg.failOpen {
			if Reason(err) == "INVALID_ARGUMENT" {
				return zero, err
			}
			return zero, fmt.Errorf("%w: %v", ErrGateUnavailable, err)
		}
		return fn(ctx)
	}
	rec := resp.GetRecord()
	switch resp.Decision {
	case DecisionSkip:
		v := zero
		if r := rec.GetResult(); r != nil {
			if b, err := r.Fields["value"].MarshalJSON(); err == nil {
				_ = json.Unmarshal(b, &v)
			}
		}
		return v, &DuplicateError{Key: key, Decision: DecisionSkip, RetryCount: int(rec.GetRetryCount())}
	case DecisionContinue:
	default:
		return zero, &DuplicateError{Key: key, Decision: DecisionAbort, RetryCount: int(rec.GetRetryCount())}
	}
	v, ferr := fn(ctx)
	token := rec.GetToken()
	// Record the outcome even if the caller's context ended: the gate
	// must not stay executing until its window passes.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(c.callContext(ctx)), 10*time.Second)
	defer cancel()
	if ferr != nil {
		_, err = gate.FailIdempotency(rctx, &pb.FailIdempotencyRequest{Key: key, Token: token, Error: truncate(ferr.Error(), 1024)})
		if err != nil {
			c.opts.logger.Warn("baldur.idempotency_fail_unrecorded", "key", key, "err", err)
		}
		return v, ferr
	}
	b, err := json.Marshal(map[string]any{"value": v})
	if err != nil {
		return v, fmt.Errorf("baldur: the result of %q does not encode as JSON: %w", key, err)
	}
	st := &structpb.Struct{}
	if err := st.UnmarshalJSON(b); err != nil {
		return v, err
	}
	if _, err := gate.CompleteIdempotency(rctx, &pb.CompleteIdempotencyRequest{Key: key, Token: token, Result: st}); err != nil {
		return v, fmt.Errorf("baldur: %q ran but its completion was not recorded: %w", key, err)
	}
	return v, nil
}

// IdempotencyGate is the client's handle on the fleet's idempotency gate.
type IdempotencyGate struct{ c *Client }

// Idempotency returns the gate (Baldur §6).
func (c *Client) Idempotency() *IdempotencyGate { return &IdempotencyGate{c: c} }

// Do runs fn at most once across the fleet for key, like Idempotent for
// a call without a result: nil when fn ran and succeeded here, fn's error
// when it failed, a *DuplicateError (SKIP: done already; ABORT: running
// elsewhere) when the gate did not run it, ErrGateUnavailable when the
// gate cannot be reached (unless WithFailOpen).
func (g *IdempotencyGate) Do(ctx context.Context, key string, fn func(context.Context) error, opts ...IdempotencyOption) error {
	_, err := Idempotent(ctx, g.c, key, func(ctx context.Context) (struct{}, error) { return struct{}{}, fn(ctx) }, opts...)
	return err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
