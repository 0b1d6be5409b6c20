package baldur

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
)

// BulkheadFullError is a call a full bulkhead rejected (Baldur §11;
// classified REJECTED).
type BulkheadFullError struct {
	Name   string
	Max    int
	Active int
}

func (e *BulkheadFullError) Error() string {
	return fmt.Sprintf("baldur: bulkhead %q is full: %d/%d active", e.Name, e.Active, e.Max)
}

// Bulkhead is a named compartment (Baldur §11): at most max_concurrent
// calls at once in this instance, a call waiting up to max_wait for a
// permit. Its capacity is the cluster's bulkheads section, followed
// without a restart; its state is reported to the cluster, which shows
// the compartment's utilization across the fleet (GET /v1/bulkheads).
type Bulkhead struct {
	c       *Client
	name    string
	max     atomic.Int32 // 0: not configured
	maxWait atomic.Int64
	active  atomic.Int32
	waiting atomic.Int32
	reject  atomic.Int64

	mu   sync.Mutex
	wake chan struct{} // closed and replaced when a permit is released to waiters
}

// Bulkhead returns the named bulkhead (one handle per name).
func (c *Client) Bulkhead(name string) *Bulkhead {
	a := c.admission
	a.mu.Lock()
	b, ok := a.bulkheads[name]
	if !ok {
		b = &Bulkhead{c: c, name: name, wake: make(chan struct{})}
		b.configure(c.config.snap.Load().bulkheads[name])
		a.bulkheads[name] = b
	}
	a.mu.Unlock()
	if !ok {
		a.started()
	}
	return b
}

func (b *Bulkhead) configure(cfg *pb.BulkheadConfig) {
	b.max.Store(cfg.GetMaxConcurrent())
	b.maxWait.Store(int64(cfg.GetMaxWait().AsDuration()))
	b.signal() // a larger capacity admits waiters
}

// Name is the bulkhead's name.
func (b *Bulkhead) Name() string { return b.name }

// TryAcquire takes a permit if one is free, without waiting. Each permit
// taken must be given back with Release. Under the cluster's kill switch,
// and in dry run, the capacity is not enforced (a call over it is counted
// as rejected in dry run).
func (b *Bulkhead) TryAcquire() bool {
	limit := b.max.Load()
	if limit == 0 {
		return false // not configured
	}
	for {
		n := b.active.Load()
		if n >= limit && !b.c.killSwitch.Load() {
			b.reject.Add(1)
			if !b.c.config.dryRun.Load() {
				return false
			}
			b.active.Add(1) // dry run: counted, admitted
			return true
		}
		if b.active.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Acquire takes a permit, waiting up to the bulkhead's max_wait (and
// ctx): nil, a *BulkheadFullError, a *NotConfiguredError, or ctx's error.
func (b *Bulkhead) Acquire(ctx context.Context) error {
	if b.max.Load() == 0 && !b.c.admission.configured(ctx, func(s *configSnapshot) bool { return s.bulkheads[b.name] != nil }) {
		return &NotConfiguredError{Kind: "bulkhead", Name: b.name}
	}
	if b.max.Load() == 0 {
		b.configure(b.c.config.snap.Load().bulkheads[b.name])
	}
	wait := time.Duration(b.maxWait.Load())
	if wait <= 0 {
		if b.TryAcquire() {
			return nil
		}
		return b.full()
	}
	if b.tryQuiet() {
		return nil
	}
	b.waiting.Add(1)
	defer b.waiting.Add(-1)
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		b.mu.Lock()
		wake := b.wake
		b.mu.Unlock()
		if b.tryQuiet() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			b.reject.Add(1)
			return b.full()
		case <-wake:
		}
	}
}

// tryQuiet is TryAcquire without counting a rejection.
func (b *Bulkhead) tryQuiet() bool {
	limit := b.max.Load()
	for {
		n := b.active.Load()
		if limit == 0 || (n >= limit && !b.c.killSwitch.Load()) {
			return false
		}
		if b.active.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (b *Bulkhead) full() error {
	return &BulkheadFullError{Name: b.name, Max: int(b.max.Load()), Active: int(b.active.Load())}
}

// Release gives a permit back.
func (b *Bulkhead) Release() {
	b.active.Add(-1)
	if b.waiting.Load() > 0 {
		b.signal()
	}
}

func (b *Bulkhead) signal() {
	b.mu.Lock()
	close(b.wake)
	b.wake = make(chan struct{})
	b.mu.Unlock()
}

// BulkheadState is a bulkhead in this instance (Baldur's BulkheadState).
type BulkheadState struct {
	Name               string
	MaxConcurrent      int
	Active             int
	Waiting            int
	Rejected           uint64
	AvailablePermits   int
	UtilizationPercent float64
}

// State is the bulkhead's state now.
func (b *Bulkhead) State() BulkheadState {
	st := BulkheadState{Name: b.name, MaxConcurrent: int(b.max.Load()), Active: int(b.active.Load()), Waiting: int(b.waiting.Load()),
		Rejected: uint64(b.reject.Load())}
	st.AvailablePermits = max(st.MaxConcurrent-st.Active, 0)
	if st.MaxConcurrent > 0 {
		st.UtilizationPercent = 100 * float64(st.Active) / float64(st.MaxConcurrent)
	}
	return st
}
