package baldur

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
)

// ErrNotConfigured is matched (errors.Is) by a rate limit, bulkhead or
// throttle the cluster's configuration does not have.
var ErrNotConfigured = errors.New("baldur: not configured in the cluster")

// NotConfiguredError names the primitive asked for.
type NotConfiguredError struct {
	Kind string // "rate limit", "bulkhead" or "throttle"
	Name string
}

func (e *NotConfiguredError) Error() string {
	return fmt.Sprintf("baldur: %s %q is not configured in the cluster (PUT /v1/%s/%s)", e.Kind, e.Name, map[string]string{
		"rate limit": "ratelimits", "bulkhead": "bulkheads", "throttle": "throttles"}[e.Kind], e.Name)
}

// Unwrap makes the error match ErrNotConfigured.
func (e *NotConfiguredError) Unwrap() error { return ErrNotConfigured }

// admissionSet holds the client's rate limiters, bulkheads and throttles and
// syncs them with the leader: each renewal period it reports their demand
// and state and receives its shares of the rate limits.
type admissionSet struct {
	c          *Client
	mu         sync.Mutex
	rateLimits map[string]*RateLimiter
	bulkheads  map[string]*Bulkhead
	throttles  map[string]*Throttle
	start      sync.Once
	kick       chan struct{}
	renew      time.Duration
	reachable  bool // the last sync succeeded (the loop's goroutine only)
}

func newAdmission(c *Client) *admissionSet {
	return &admissionSet{c: c, rateLimits: map[string]*RateLimiter{}, bulkheads: map[string]*Bulkhead{}, throttles: map[string]*Throttle{},
		kick: make(chan struct{}, 1), renew: 2 * time.Second}
}

// configured waits (up to a second, or ctx) for the first configuration,
// then reports whether the section has the name.
func (a *admissionSet) configured(ctx context.Context, has func(*configSnapshot) bool) bool {
	select {
	case <-a.c.ready:
	case <-ctx.Done():
	case <-time.After(time.Second):
	}
	return has(a.c.config.snap.Load())
}

// started runs the sync loop from the first handle on.
func (a *admissionSet) started() {
	a.start.Do(func() {
		a.c.wg.Add(1)
		go func() {
			defer a.c.wg.Done()
			a.loop(a.c.runCtx)
		}()
	})
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// onConfig follows a new configuration: bulkhead capacities, throttle
// settings, rate limits removed.
func (a *admissionSet) onConfig(s *configSnapshot) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for name, b := range a.bulkheads {
		b.configure(s.bulkheads[name])
	}
	for name, t := range a.throttles {
		t.configure(s.throttles[name])
	}
	for name, r := range a.rateLimits {
		if s.rateLimits[name] == nil {
			r.setShare(0, 1, false)
		}
	}
}

func (a *admissionSet) loop(ctx context.Context) {
	client := pb.NewAdmissionServiceClient(a.c.conn)
	last := time.Now()
	for {
		wait := a.renew
		select {
		case <-ctx.Done():
			if a.reachable {
				// Give the shares back to the others.
				lctx, cancel := context.WithTimeout(a.c.callContext(context.Background()), 500*time.Millisecond)
				_, _ = client.SyncAdmission(lctx, &pb.SyncAdmissionRequest{Instance: a.c.opts.instanceID, Leaving: true})
				cancel()
			}
			return
		case <-a.kick:
		case <-time.After(wait):
		}
		now := time.Now()
		req := a.report(now.Sub(last))
		last = now
		sctx, cancel := context.WithTimeout(a.c.callContext(ctx), max(a.renew, time.Second))
		resp, err := client.SyncAdmission(sctx, req)
		cancel()
		a.reachable = err == nil
		a.apply(resp, err, now)
	}
}

// report is what the handles did over the last period.
func (a *admissionSet) report(elapsed time.Duration) *pb.SyncAdmissionRequest {
	req := &pb.SyncAdmissionRequest{Instance: a.c.opts.instanceID}
	a.mu.Lock()
	defer a.mu.Unlock()
	secs := max(elapsed.Seconds(), 1e-3)
	for name, r := range a.rateLimits {
		a, f := r.period()
		admitted, refused := float64(a), float64(f)
		has := r.shareRate()
		// 10 % of headroom: an instance granted exactly what it asked
		// for would refuse its own calls that come a moment early.
		demand := 1.1 * (admitted + refused) / secs
		if r.waiting.Load() > 0 {
			// Callers blocked in Wait want more than the share gives.
			demand = max(demand, 2*has)
		}
		req.RateLimits = append(req.RateLimits, &pb.RateDemand{Name: name, Demand: demand, Has: has, Admitted: admitted / secs, Rejected: refused / secs})
	}
	for name, b := range a.bulkheads {
		st := b.State()
		req.Bulkheads = append(req.Bulkheads, &pb.BulkheadReport{Name: name, MaxConcurrent: int32(st.MaxConcurrent), Active: int32(st.Active),
			Waiting: int32(st.Waiting), RejectedTotal: int64(st.Rejected)})
	}
	for name, t := range a.throttles {
		st := t.State()
		req.Throttles = append(req.Throttles, &pb.ThrottleReport{Name: name, Limit: int32(st.Limit), Regime: st.Regime, InWindow: int32(st.InWindow),
			RttMs: float64(st.RTT.Microseconds()) / 1000, Gradient: st.Gradient})
	}
	return req
}

// apply installs the shares a sync returned; after a failed sync, a share
// whose lease ended falls back to the safe local rate.
func (a *admissionSet) apply(resp *pb.SyncAdmissionResponse, err error, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		for _, r := range a.rateLimits {
			r.expire(now)
		}
		return
	}
	if d := resp.GetRenewAfter().AsDuration(); d > 0 {
		a.renew = d
	}
	got := map[string]*pb.RateShare{}
	for _, s := range resp.Shares {
		got[s.Name] = s
	}
	for name, r := range a.rateLimits {
		if s, ok := got[name]; ok {
			r.grant(s.Rate, int(s.Burst), now.Add(s.Lease.AsDuration()), int(s.Instances))
		} else {
			r.expire(now)
		}
	}
}

// check refuses names the cluster's configuration does not have, before
// any stage of Protect runs.
func (a *admissionSet) check(ctx context.Context, rateLimit, bulkhead, throttle string) error {
	has := func(kind, name string, in func(*configSnapshot) bool) error {
		if name == "" || in(a.c.config.snap.Load()) || a.configured(ctx, in) {
			return nil
		}
		return &NotConfiguredError{Kind: kind, Name: name}
	}
	if err := has("rate limit", rateLimit, func(s *configSnapshot) bool { return s.rateLimits[rateLimit] != nil }); err != nil {
		return err
	}
	if err := has("bulkhead", bulkhead, func(s *configSnapshot) bool { return s.bulkheads[bulkhead] != nil }); err != nil {
		return err
	}
	return has("throttle", throttle, func(s *configSnapshot) bool { return s.throttles[throttle] != nil })
}

// admit runs Protect's admission stages in order: the rate limit, the
// bulkhead (a permit held until done), the throttle.
func (a *admissionSet) admit(ctx context.Context, rateLimit, bulkhead, throttle string) (*Bulkhead, *Throttle, error) {
	if rateLimit != "" {
		if err := a.c.RateLimit(rateLimit).Check(); err != nil {
			return nil, nil, err
		}
	}
	var bh *Bulkhead
	if bulkhead != "" {
		bh = a.c.Bulkhead(bulkhead)
		if err := bh.Acquire(ctx); err != nil {
			return nil, nil, err
		}
	}
	var th *Throttle
	if throttle != "" {
		th = a.c.Throttle(throttle)
		if err := th.check(); err != nil {
			if bh != nil {
				bh.Release()
			}
			return nil, nil, err
		}
	}
	return bh, th, nil
}

// done ends an admitted call: the permit back, the round trip recorded.
func (a *admissionSet) done(bh *Bulkhead, th *Throttle, start time.Time) {
	if bh != nil {
		bh.Release()
	}
	if th != nil {
		th.Record(time.Since(start))
	}
}

func (a *admissionSet) stats() (map[string]RateLimitStats, map[string]BulkheadState, map[string]ThrottleState) {
	a.mu.Lock()
	rls, bhs, ths := make([]*RateLimiter, 0, len(a.rateLimits)), make([]*Bulkhead, 0, len(a.bulkheads)), make([]*Throttle, 0, len(a.throttles))
	for _, r := range a.rateLimits {
		rls = append(rls, r)
	}
	for _, b := range a.bulkheads {
		bhs = append(bhs, b)
	}
	for _, t := range a.throttles {
		ths = append(ths, t)
	}
	a.mu.Unlock()
	r := make(map[string]RateLimitStats, len(rls))
	for _, l := range rls {
		a, f := l.counts()
		r[l.name] = RateLimitStats{Share: l.shareRate(), Admitted: l.admittedBefore.Load() + a, Refused: l.refusedBefore.Load() + f}
	}
	b := make(map[string]BulkheadState, len(bhs))
	for _, h := range bhs {
		b[h.name] = h.State()
	}
	t := make(map[string]ThrottleState, len(ths))
	for _, h := range ths {
		t[h.name] = h.State()
	}
	return r, b, t
}
