package baldur

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
)

// State is a breaker state.
type State int32

// Breaker states.
const (
	StateClosed State = iota
	StateOpen
	StateHalfOpen
)

func (s State) String() string { return pb.CircuitState_Value(s).String() }

// ErrCircuitOpen is matched (errors.Is) by every rejection of a breaker.
var ErrCircuitOpen = errors.New("baldur: circuit open")

// CircuitOpenError is a rejection: Fleet tells whether the fleet view
// (pushed by the cluster) or this process's local view rejected the call.
type CircuitOpenError struct {
	Name  string
	Fleet bool
	State State
}

func (e *CircuitOpenError) Error() string {
	view := "local"
	if e.Fleet {
		view = "fleet"
	}
	return fmt.Sprintf("baldur: circuit %q is %s (%s view)", e.Name, e.State, view)
}

// Is makes errors.Is(err, ErrCircuitOpen) true.
func (e *CircuitOpenError) Is(target error) bool { return target == ErrCircuitOpen }

// localPolicy is the subset of a policy the local view uses.
type localPolicy struct {
	failureThreshold int64
	failureRate      float64
	minimumCalls     int64
	windowSize       int
	slowCall         time.Duration
	slowRate         float64
	recovery         time.Duration
	halfOpenMax      int32
	successThreshold int32
	dryRun           bool
}

func defaultLocalPolicy() *localPolicy {
	return &localPolicy{failureThreshold: 5, failureRate: 50, minimumCalls: 10, windowSize: 100, slowCall: 60 * time.Second,
		recovery: 60 * time.Second, halfOpenMax: 3, successThreshold: 2}
}

func localPolicyFrom(p *pb.CircuitPolicy) *localPolicy {
	lp := defaultLocalPolicy()
	if p == nil {
		return lp
	}
	if p.FailureThreshold > 0 {
		lp.failureThreshold = int64(p.FailureThreshold)
	}
	lp.failureRate = p.GetFailureRateThreshold()
	if p.MinimumCalls > 0 {
		lp.minimumCalls = int64(p.MinimumCalls)
	}
	if p.WindowSize > 0 && p.WindowType == pb.WindowType_COUNT {
		lp.windowSize = int(p.WindowSize)
	}
	if d := p.SlowCallDuration.AsDuration(); d > 0 {
		lp.slowCall = d
	}
	lp.slowRate = p.GetSlowCallRateThreshold()
	if d := p.RecoveryTimeout.AsDuration(); d > 0 {
		lp.recovery = d
	}
	if p.HalfOpenMaxCalls > 0 {
		lp.halfOpenMax = p.HalfOpenMaxCalls
	}
	if p.SuccessThreshold > 0 {
		lp.successThreshold = p.SuccessThreshold
	}
	lp.dryRun = p.DryRun
	return lp
}

// fleetView is the breaker as the cluster last pushed it.
type fleetView struct {
	state       State
	policy      *localPolicy
	probeWindow uint64
	revision    uint64
}

// localView is this process's own breaker (Baldur's per-process triggers).
// It is lock-free: the count window is a ring of outcome slots whose
// failure total is kept with atomic adds, so concurrent writers may blur a
// slot at wrap-around but never block.
type localView struct {
	state       atomic.Int32
	openedAt    atomic.Int64
	consecutive atomic.Int64
	ring        atomic.Pointer[ring]
	probes      atomic.Int32 // local HALF_OPEN permits handed out
	probeOK     atomic.Int32
}

type ring struct {
	slots    []atomic.Uint32 // 0 empty, 1 success, 2 failure, 3 slow success, 4 slow failure
	calls    atomic.Int64
	failures atomic.Int64
	slow     atomic.Int64
}

func newRing(n int) *ring { return &ring{slots: make([]atomic.Uint32, n)} }

func (r *ring) add(idx uint64, v uint32) {
	slot := &r.slots[idx%uint64(len(r.slots))]
	if slot.Load() == v {
		return // steady state: no write, no shared cache line dirtied
	}
	old := slot.Swap(v)
	if old == 0 {
		r.calls.Add(1)
	}
	if (old == 2 || old == 4) != (v == 2 || v == 4) {
		if v == 2 || v == 4 {
			r.failures.Add(1)
		} else {
			r.failures.Add(-1)
		}
	}
	if (old >= 3) != (v >= 3) {
		if v >= 3 {
			r.slow.Add(1)
		} else {
			r.slow.Add(-1)
		}
	}
}

// Breaker guards calls to one dependency. Get it with Client.Breaker; it is
// safe for concurrent use. Allow never waits on the network.
type Breaker struct {
	name  string
	c     *Client
	fleet atomic.Pointer[fleetView]
	local localView

	// Fleet HALF_OPEN permits granted to this process.
	permits         atomic.Int32
	probesInFlight  atomic.Int32
	permitWindow    atomic.Uint64
	probeWanted     atomic.Bool
	lastLocalPolicy atomic.Pointer[localPolicy]

	// The two counters every successful call writes share one cache line,
	// padded away from the read-mostly fields above, so concurrent callers
	// contend on a single line.
	_    [64]byte
	next atomic.Uint64 // ring index
	// Per-interval counters, swapped out by the reporter.
	successes atomic.Int64
	_         [48]byte

	failures, slow, rejections    atomic.Int64
	probeSuccesses, probeFailures atomic.Int64
	wouldReject                   atomic.Int64
	blockedOpen, blockedHalfOpen  atomic.Uint64 // since creation
	calls                         *callStats    // Protect's counters for this name
	intervalRev                   atomic.Uint64 // fleet revision when the current report interval began
	held                          int64         // successes of earlier intervals not yet reported (the report loop's)
	heldRev                       uint64        // the revision the first of them began under
	// Calls by duration while a rollout is active (latencyBounds), for
	// the canary judgment's p95 and p99.
	latency [len(latencyBounds) + 1]atomic.Int64
}

// latencyBounds are the latency histogram's upper bounds (the cluster's
// canary.LatencyBounds).
var latencyBounds = [...]time.Duration{time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second}

func latencyBucket(d time.Duration) int {
	for i, b := range latencyBounds {
		if d <= b {
			return i
		}
	}
	return len(latencyBounds)
}

func newBreaker(c *Client, name string) *Breaker {
	b := &Breaker{name: name, c: c, calls: c.calls.of(name)}
	lp := defaultLocalPolicy()
	b.lastLocalPolicy.Store(lp)
	b.local.ring.Store(newRing(lp.windowSize))
	return b
}

// Name is the breaker's name.
func (b *Breaker) Name() string { return b.name }

func (b *Breaker) policy() *localPolicy { return b.lastLocalPolicy.Load() }

// setFleet installs a pushed state.
func (b *Breaker) setFleet(f *fleetView) {
	old := b.fleet.Swap(f)
	if old == nil || old.policy.windowSize != f.policy.windowSize {
		b.local.ring.Store(newRing(f.policy.windowSize))
	}
	b.lastLocalPolicy.Store(f.policy)
	if f.state != StateHalfOpen || (old != nil && old.probeWindow != f.probeWindow) {
		b.permits.Store(0)
	}
}

// State reports the combined state: OPEN if either view is open, else
// HALF_OPEN if either is, else CLOSED.
func (b *Breaker) State() State {
	ls := State(b.local.state.Load())
	fs := StateClosed
	if f := b.fleet.Load(); f != nil && !b.c.circuitsStale() {
		fs = f.state
	}
	return max(ls, fs)
}

// FleetState is the state last pushed by the cluster (CLOSED if unknown).
func (b *Breaker) FleetState() State {
	if f := b.fleet.Load(); f != nil {
		return f.state
	}
	return StateClosed
}

// FleetRevision is the revision of the fleet state last pushed for this
// breaker, 0 when none arrived yet (the local view then runs on Baldur's
// defaults).
func (b *Breaker) FleetRevision() uint64 {
	if f := b.fleet.Load(); f != nil {
		return f.revision
	}
	return 0
}

// LocalState is this process's own view.
func (b *Breaker) LocalState() State { return State(b.local.state.Load()) }

// Allow decides whether a call may proceed. It returns nil or a
// *CircuitOpenError (errors.Is ErrCircuitOpen). Report the call's outcome
// with Record. With the kill switch on, or in dry run, it always allows.
func (b *Breaker) Allow() error {
	if b.c.killSwitch.Load() {
		return nil
	}
	if err := b.allowLocal(); err != nil {
		return b.reject(err)
	}
	f := b.fleet.Load()
	if f == nil || f.state == StateClosed {
		return nil
	}
	if b.c.circuitsStale() {
		return nil // fail static ended: local decisions only
	}
	if f.state == StateHalfOpen {
		if b.permits.Add(-1) >= 0 {
			b.probesInFlight.Add(1)
			return nil
		}
		b.permits.Add(1)
		b.wantProbe()
	}
	return b.reject(&CircuitOpenError{Name: b.name, Fleet: true, State: f.state})
}

func (b *Breaker) reject(err *CircuitOpenError) error {
	if b.policy().dryRun || b.c.config.dryRun.Load() {
		b.wouldReject.Add(1)
		return nil
	}
	b.rejections.Add(1)
	if err.State == StateHalfOpen {
		b.blockedHalfOpen.Add(1)
	} else {
		b.blockedOpen.Add(1)
	}
	return err
}

func (b *Breaker) wantProbe() {
	if !b.probeWanted.Swap(true) {
		b.c.kickReporter()
	}
}

func (b *Breaker) allowLocal() *CircuitOpenError {
	switch State(b.local.state.Load()) {
	case StateClosed:
		return nil
	case StateOpen:
		p := b.policy()
		if time.Now().UnixNano()-b.local.openedAt.Load() < int64(p.recovery) {
			return &CircuitOpenError{Name: b.name, State: StateOpen}
		}
		if b.local.state.CompareAndSwap(int32(StateOpen), int32(StateHalfOpen)) {
			b.local.probes.Store(0)
			b.local.probeOK.Store(0)
		}
		fallthrough
	default: // HALF_OPEN: a few local trial calls
		if b.local.probes.Add(1) <= b.policy().halfOpenMax {
			return nil
		}
		return &CircuitOpenError{Name: b.name, State: StateHalfOpen}
	}
}

// Record reports the outcome of a call Allow admitted. nil is a success;
// context.Canceled never counts; errors the client's classifier ignores
// count as neither.
func (b *Breaker) Record(err error) { b.record(err, 0) }

// record is Record with the call's duration (0 = unknown) for slow calls.
func (b *Breaker) record(err error, d time.Duration) {
	if err != nil && !b.c.countsAsFailure(err) {
		if b.probesInFlight.Load() > 0 {
			b.probesInFlight.Add(-1)
		}
		return
	}
	failed := err != nil
	slow := d > 0 && d >= b.policy().slowCall
	if b.probesInFlight.Load() > 0 && b.probesInFlight.Add(-1) >= 0 {
		if failed {
			b.probeFailures.Add(1)
		} else {
			b.probeSuccesses.Add(1)
		}
		b.c.kickReporter()
	} else if failed {
		b.failures.Add(1)
		b.c.signalNews()
	} else {
		b.successes.Add(1)
	}
	if slow {
		b.slow.Add(1)
		b.c.signalNews()
	}
	if d > 0 && b.c.config.tracking() {
		b.latency[latencyBucket(d)].Add(1)
	}
	b.recordLocal(failed, slow)
}

func (b *Breaker) recordLocal(failed, slow bool) {
	switch State(b.local.state.Load()) {
	case StateHalfOpen:
		p := b.policy()
		if failed {
			b.openLocal()
		} else if b.local.probeOK.Add(1) >= p.successThreshold {
			if b.local.state.CompareAndSwap(int32(StateHalfOpen), int32(StateClosed)) {
				b.local.ring.Store(newRing(p.windowSize))
				b.local.consecutive.Store(0)
			}
		}
		return
	case StateOpen:
		return
	}
	r := b.local.ring.Load()
	v := uint32(1)
	if failed {
		v = 2
	}
	if slow {
		v += 2
	}
	r.add(b.next.Add(1), v)
	if !failed {
		if b.local.consecutive.Load() != 0 {
			b.local.consecutive.Store(0)
		}
		if !slow {
			return
		}
	}
	p := b.policy()
	consecutive := b.local.consecutive.Load()
	if failed {
		consecutive = b.local.consecutive.Add(1)
	}
	calls := r.calls.Load()
	switch {
	case failed && consecutive >= p.failureThreshold,
		failed && p.failureRate > 0 && calls >= p.minimumCalls && float64(r.failures.Load())*100/float64(calls) >= p.failureRate,
		slow && p.slowRate > 0 && calls >= p.minimumCalls && float64(r.slow.Load())*100/float64(calls) >= p.slowRate:
		b.openLocal()
	}
}

func (b *Breaker) openLocal() {
	b.local.openedAt.Store(time.Now().UnixNano())
	if b.local.state.Swap(int32(StateOpen)) != int32(StateOpen) {
		b.local.consecutive.Store(0)
		b.local.ring.Store(newRing(b.policy().windowSize))
		b.c.kickReporter()
	}
}

// Permit is one admitted call of the two-step form, for work that ends
// elsewhere (a callback, another goroutine). End it exactly once.
type Permit struct {
	b     *Breaker
	start time.Time
}

// Begin is Allow for the two-step form: it also times the call so slow
// calls are counted. End the permit with its outcome.
func (b *Breaker) Begin() (Permit, error) {
	if err := b.Allow(); err != nil {
		return Permit{}, err
	}
	return Permit{b: b, start: time.Now()}, nil
}

// End reports the outcome of the call the permit admitted.
func (p Permit) End(err error) {
	if p.b != nil {
		p.b.record(err, time.Since(p.start))
	}
}

// BreakerStats are this process's counters for one breaker.
type BreakerStats struct {
	State State // the combined state now (baldur_circuit_breaker_state)
	// Blocked counts rejected calls since creation by reason, "open" or
	// "half_open_full" (baldur_circuit_breaker_blocked_total).
	Blocked     map[string]uint64
	WouldReject int64 // dry-run rejections since creation
}

// Stats returns the breaker's counters.
func (b *Breaker) Stats() BreakerStats {
	return BreakerStats{State: b.State(), WouldReject: b.wouldReject.Load(),
		Blocked: map[string]uint64{"open": b.blockedOpen.Load(), "half_open_full": b.blockedHalfOpen.Load()}}
}

// countsAsFailure applies the client's error classification.
func (c *Client) countsAsFailure(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	for _, ignored := range c.opts.ignoreErrors {
		if errors.Is(err, ignored) {
			return false
		}
	}
	if c.opts.isFailure != nil {
		return c.opts.isFailure(err)
	}
	return true
}
