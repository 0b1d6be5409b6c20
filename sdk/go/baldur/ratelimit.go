package baldur

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// RateLimitExceededError is a call a rate limit refused.
type RateLimitExceededError struct {
	Name string
	// Limit is this instance's share, in calls a second.
	Limit float64
	// ResetAt is when the next call would be admitted at the current share.
	ResetAt time.Time
}

func (e *RateLimitExceededError) Error() string {
	return fmt.Sprintf("baldur: rate limit %q exceeded (this instance's share: %.4g/s); next admission at %s", e.Name, e.Limit, e.ResetAt.Format(time.RFC3339Nano))
}

// RateLimiter is a fleet-wide rate limit as this instance applies it: a
// token bucket of its share (GCRA on atomic words, no lock, no network on
// the hot path), split into one bucket per CPU so that cores do not
// contend for one cache line; a call that finds its bucket empty tries the
// others before it is refused. The share is the leader's lease on a fair
// part of the limit, renewed every renewal period; while the cluster cannot be reached the
// last share holds until its lease ends, then the limit's fallback rate.
// Before its first share an instance admits nothing (Wait waits for it).
type RateLimiter struct {
	c    *Client
	name string
	// shards are the per-CPU buckets; params their rate and burst (nil:
	// no share).
	shards []shard
	params atomic.Pointer[gcra]
	// the counts of earlier periods
	admittedBefore, refusedBefore atomic.Int64
	waiting                       atomic.Int32
	known                         atomic.Bool

	mu        sync.Mutex // the share, for the sync loop
	share     float64
	burst     int
	leaseEnd  time.Time
	instances int
	granted   chan struct{} // closed and replaced at each grant
}

// shard is one bucket: its theoretical arrival time (ns on the client's
// monotonic clock) and its counts since the last sync, on a cache line of
// its own. The counts share tat's line on purpose: the CAS has just taken
// it.
type shard struct {
	tat               atomic.Int64
	admitted, refused atomic.Int64
	_                 [40]byte
}

// gcra is each shard's part of the share.
type gcra struct {
	n         int      // shards in use: one per 1,000 calls a second of share, at most one per CPU
	interval  int64    // ns per call in one shard
	tolerance [8]int64 // interval × each shard's part of the burst
	rate      float64
}

// shardCount is the buckets a limiter splits its share into.
func shardCount() int { return min(runtime.GOMAXPROCS(0), 8) }

// RateLimit returns the named fleet-wide rate limit (one handle per name).
// A name the cluster's configuration does not have admits nothing: Wait
// and Protect's WithRateLimit return a *NotConfiguredError.
func (c *Client) RateLimit(name string) *RateLimiter {
	a := c.admission
	a.mu.Lock()
	r, ok := a.rateLimits[name]
	if !ok {
		r = &RateLimiter{c: c, name: name, granted: make(chan struct{}), shards: make([]shard, shardCount())}
		_, known := c.config.snap.Load().rateLimits[name]
		r.known.Store(known)
		a.rateLimits[name] = r
	}
	a.mu.Unlock()
	if !ok {
		a.started()
	}
	return r
}

// Name is the limit's name.
func (r *RateLimiter) Name() string { return r.name }

func (r *RateLimiter) now() int64 { return int64(time.Since(r.c.epoch)) }

// Allow admits one call now, or refuses it. It never blocks. Under the
// cluster's kill switch every call is admitted; in dry run a call the
// share would refuse is counted as refused and admitted.
func (r *RateLimiter) Allow() bool {
	p := r.params.Load()
	i := pick(p)
	if r.take(p, i) {
		return true
	}
	r.shards[i].refused.Add(1)
	return r.c.killSwitch.Load() || r.c.config.dryRun.Load()
}

// pick is the shard a call starts from.
func pick(p *gcra) int {
	if p == nil || p.n <= 1 {
		return 0
	}
	return int(rand.Uint32() % uint32(p.n))
}

// take takes a token, from shard first or, when it is empty, another in
// use, and counts it as admitted.
func (r *RateLimiter) take(p *gcra, first int) bool {
	if p == nil {
		return false
	}
	now := r.now()
	for k := range p.n {
		i := (first + k) % p.n
		sh := &r.shards[i]
		for {
			tat := sh.tat.Load()
			next := max(tat, now) + p.interval
			if next-now > p.tolerance[i] {
				break
			}
			if sh.tat.CompareAndSwap(tat, next) {
				sh.admitted.Add(1)
				return true
			}
		}
	}
	return false
}

// resetIn is how long until the next call would be admitted (-1: no
// share yet).
func (r *RateLimiter) resetIn() time.Duration {
	p := r.params.Load()
	if p == nil {
		return -1
	}
	now, soonest := r.now(), int64(math.MaxInt64)
	for i := range p.n {
		soonest = min(soonest, r.shards[i].tat.Load()+p.interval-p.tolerance[i]-now)
	}
	return time.Duration(max(soonest, 0))
}

// Check is Allow as an error: nil, a *RateLimitExceededError with the
// time of the next admission, or a *NotConfiguredError.
func (r *RateLimiter) Check() error {
	if !r.known.Load() {
		r.shards[0].refused.Add(1)
		return &NotConfiguredError{Kind: "rate limit", Name: r.name}
	}
	if r.Allow() {
		return nil
	}
	return r.exceeded()
}

func (r *RateLimiter) exceeded() error {
	in := r.resetIn()
	if in < 0 {
		in = r.c.admission.renew
	}
	rate := 0.0
	if p := r.params.Load(); p != nil {
		rate = p.rate
	}
	return &RateLimitExceededError{Name: r.name, Limit: rate, ResetAt: time.Now().Add(in)}
}

// Wait blocks until a call is admitted or ctx ends.
func (r *RateLimiter) Wait(ctx context.Context) error {
	if !r.known.Load() && !r.c.admission.configured(ctx, func(s *configSnapshot) bool { return s.rateLimits[r.name] != nil }) {
		return &NotConfiguredError{Kind: "rate limit", Name: r.name}
	}
	r.known.Store(true)
	if p := r.params.Load(); r.take(p, pick(p)) || r.c.killSwitch.Load() {
		return nil
	}
	r.waiting.Add(1)
	defer r.waiting.Add(-1)
	r.shards[0].refused.Add(1) // it asked for one more than the share gave
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		in := r.resetIn()
		r.mu.Lock()
		granted := r.granted
		r.mu.Unlock()
		if in < 0 {
			in = r.c.admission.renew // no share yet: its grant wakes us
		}
		t.Reset(in)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-granted:
		}
		if p := r.params.Load(); r.take(p, pick(p)) || r.c.killSwitch.Load() {
			return nil
		}
	}
}

// Share is this instance's share in calls a second (0 before the first).
func (r *RateLimiter) Share() float64 { return r.shareRate() }

func (r *RateLimiter) shareRate() float64 {
	if p := r.params.Load(); p != nil {
		return p.rate
	}
	return 0
}

// counts is the calls admitted and refused since the last sync.
func (r *RateLimiter) counts() (admitted, refused int64) {
	for i := range r.shards {
		admitted += r.shards[i].admitted.Load()
		refused += r.shards[i].refused.Load()
	}
	return admitted, refused
}

// setShare installs a rate (calls a second) and burst.
func (r *RateLimiter) setShare(rate float64, burst int, known bool) {
	r.known.Store(known)
	if !(rate > 0) {
		r.params.Store(nil)
		return
	}
	// Each of n shards admits rate/n and its part of the burst (at least
	// one): the shards together admit the share. A share below 2,000 calls
	// a second has one bucket: contention needs more calls than that, and
	// small buckets would refuse calls that come a moment early.
	n := min(len(r.shards), max(1, int(rate/1000)))
	interval := int64(math.Max(1, 1e9*float64(n)/rate))
	g := &gcra{n: n, interval: interval, rate: rate}
	burst = max(burst, n)
	for i := range n {
		part := burst / n
		if i < burst%n {
			part++
		}
		g.tolerance[i] = interval * int64(part)
	}
	r.params.Store(g)
}

// grant installs a share the leader granted until leaseEnd.
func (r *RateLimiter) grant(rate float64, burst int, leaseEnd time.Time, instances int) {
	r.mu.Lock()
	r.share, r.burst, r.leaseEnd, r.instances = rate, burst, leaseEnd, instances
	close(r.granted)
	r.granted = make(chan struct{})
	r.mu.Unlock()
	r.setShare(rate, burst, true)
}

// expire falls back to the safe local rate once the lease has ended
// without renewal: the limit's fallback_rate, or the equal share of the
// fleet last seen, never more than the last share.
func (r *RateLimiter) expire(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.leaseEnd.IsZero() || now.Before(r.leaseEnd) {
		return
	}
	cfg := r.c.config.snap.Load().rateLimits[r.name]
	if cfg == nil {
		r.setShare(0, 1, false)
		return
	}
	per := cfg.GetPer().AsDuration().Seconds()
	if per <= 0 {
		per = 1
	}
	rate := cfg.GetFallbackRate() / per
	if rate <= 0 {
		rate = min(r.share, cfg.GetRate()/per/float64(max(r.instances, 1)))
	}
	burst := max(min(int(cfg.GetBurst()), 2), int(float64(cfg.GetBurst())*rate/(cfg.GetRate()/per)))
	r.setShare(rate, burst, true)
}

// RateLimitStats is one rate limit as this instance applies it.
type RateLimitStats struct {
	Share    float64 // calls a second
	Admitted int64   // since Dial
	Refused  int64   // since Dial
}

// period takes the counts of the period ending now.
func (r *RateLimiter) period() (admitted, refused int64) {
	for i := range r.shards {
		admitted += r.shards[i].admitted.Swap(0)
		refused += r.shards[i].refused.Swap(0)
	}
	r.admittedBefore.Add(admitted)
	r.refusedBefore.Add(refused)
	return admitted, refused
}
