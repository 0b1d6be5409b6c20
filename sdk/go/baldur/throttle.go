package baldur

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
)

// Throttle regimes (Baldur §12).
const (
	RegimeNormal     = "NORMAL"
	RegimeThrottling = "THROTTLING"
	RegimeRecovering = "RECOVERING"
	RegimeFrozen     = "FROZEN"
)

// ThrottledError is a call the adaptive throttle refused.
type ThrottledError struct {
	Name     string
	Limit    int
	InWindow int
	Regime   string
}

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("baldur: throttle %q refused the call: %d calls in the window, limit %d (%s)", e.Name, e.InWindow, e.Limit, e.Regime)
}

// Throttle is the adaptive throttle of Baldur §12 in this instance: a
// windowed admission counter whose limit floats between min_limit and
// max_limit, steered by the calls' round trip times (Record): a call
// slower than sla_critical cuts the limit by 30 % at once, an average
// above sla_warning or a rising trend (smoothed) by decrease_ratio, and a
// falling or steady trend within the SLA raises it by increase_step, at
// most once per sample_interval. The limit in force is coupled to the
// breaker of the throttle's name (OPEN: cb_open_limit_percent of it, at
// least min_limit; HALF_OPEN: cb_half_open_limit_percent) and to the
// emergency level (LEVEL_1 and LEVEL_2 multipliers; at LEVEL_3 or under
// the kill switch the limit is FROZEN: the gradient keeps computing, its
// changes are not applied). When the coupling pressure ends the limit
// recovers in steps of 80 %, 90 % and 100 %, recovery_step_interval each.
type Throttle struct {
	c    *Client
	name string
	cfg  atomic.Pointer[throttleConfig]
	now  func() time.Time

	windowStart atomic.Int64 // ns since the client's epoch
	inWindow    atomic.Int32
	rejected    atomic.Int64
	eff         atomic.Int32 // the limit in force, as last computed

	mu          sync.Mutex
	base        float64 // the gradient-steered limit
	smoothed    float64
	prev        float64
	gradient    float64
	lastRTT     time.Duration
	sampleStart time.Time
	sampleSum   time.Duration
	sampleN     int
	sampleMax   time.Duration
	regime      string
	slaPressure bool
	pressure    float64   // the coupling multiplier last applied
	rampStart   time.Time // a pressure source stood down
}

type throttleConfig struct {
	initial, minL, maxL, step          int
	window, sample, warn, crit, rampIv time.Duration
	alpha, decrease, cbOpen, cbHalf    float64
	l1, l2                             float64
	breaker                            string
}

// Throttle returns the named adaptive throttle (one handle per name).
func (c *Client) Throttle(name string) *Throttle {
	a := c.admission
	a.mu.Lock()
	t, ok := a.throttles[name]
	if !ok {
		t = &Throttle{c: c, name: name, now: time.Now, regime: RegimeNormal, gradient: 1, pressure: 1}
		t.configure(c.config.snap.Load().throttles[name])
		a.throttles[name] = t
	}
	a.mu.Unlock()
	if !ok {
		a.started()
	}
	return t
}

func (t *Throttle) configure(p *pb.ThrottleConfig) {
	if p == nil {
		t.cfg.Store(nil)
		return
	}
	cfg := &throttleConfig{initial: int(p.InitialLimit), minL: int(p.MinLimit), maxL: int(p.MaxLimit), step: int(p.IncreaseStep),
		window: p.Window.AsDuration(), sample: p.SampleInterval.AsDuration(), warn: p.SlaWarning.AsDuration(), crit: p.SlaCritical.AsDuration(),
		rampIv: p.RecoveryStepInterval.AsDuration(), alpha: p.SmoothingFactor, decrease: p.DecreaseRatio, cbOpen: p.CbOpenLimitPercent,
		cbHalf: p.CbHalfOpenLimitPercent, l1: p.Level1Multiplier, l2: p.Level2Multiplier, breaker: p.Breaker}
	if cfg.breaker == "" {
		cfg.breaker = t.name
	}
	t.mu.Lock()
	if old := t.cfg.Load(); old == nil {
		t.base = float64(cfg.initial)
	}
	t.base = min(max(t.base, float64(cfg.minL)), float64(cfg.maxL))
	t.cfg.Store(cfg)
	t.effectiveLocked(t.now())
	t.mu.Unlock()
}

// Name is the throttle's name.
func (t *Throttle) Name() string { return t.name }

// Allow admits a call if the window's count is below the limit in force.
// Pair an admitted call with Record(its round trip time).
func (t *Throttle) Allow() bool {
	cfg := t.cfg.Load()
	if cfg == nil {
		return false
	}
	now := int64(time.Since(t.c.epoch))
	if ws := t.windowStart.Load(); now-ws >= int64(cfg.window) && t.windowStart.CompareAndSwap(ws, now) {
		t.inWindow.Store(0)
	}
	limit := t.eff.Load()
	if n := t.inWindow.Add(1); n > limit && !t.c.killSwitch.Load() {
		t.rejected.Add(1)
		if !t.c.config.dryRun.Load() {
			t.inWindow.Add(-1)
			return false
		}
	}
	return true
}

// check is Allow as an error.
func (t *Throttle) check() error {
	if t.cfg.Load() == nil {
		return &NotConfiguredError{Kind: "throttle", Name: t.name}
	}
	if t.Allow() {
		return nil
	}
	return &ThrottledError{Name: t.name, Limit: int(t.eff.Load()), InWindow: int(t.inWindow.Load()), Regime: t.State().Regime}
}

// Record reports an admitted call's round trip time.
func (t *Throttle) Record(rtt time.Duration) {
	cfg := t.cfg.Load()
	if cfg == nil {
		return
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lastRTT = rtt
	if t.sampleStart.IsZero() {
		t.sampleStart = now
	}
	t.sampleSum += rtt
	t.sampleN++
	t.sampleMax = max(t.sampleMax, rtt)
	if now.Sub(t.sampleStart) < cfg.sample {
		return
	}
	avg := t.sampleSum / time.Duration(t.sampleN)
	worst := t.sampleMax
	t.sampleStart, t.sampleSum, t.sampleN, t.sampleMax = now, 0, 0, 0
	t.adjustLocked(cfg, avg, worst, now)
}

// adjustLocked is one step of the gradient (t.mu held).
func (t *Throttle) adjustLocked(cfg *throttleConfig, avg, worst time.Duration, now time.Time) {
	if t.smoothed == 0 {
		t.smoothed = float64(avg)
	} else {
		t.smoothed = cfg.alpha*float64(avg) + (1-cfg.alpha)*t.smoothed
	}
	t.gradient = 1
	if t.prev > 0 && t.smoothed > 0 {
		t.gradient = t.prev / t.smoothed
	}
	next := t.base
	switch {
	case worst > cfg.crit:
		next, t.slaPressure = t.base*0.7, true
	case avg > cfg.warn:
		next, t.slaPressure = t.base*cfg.decrease, true
	case t.prev > 0 && t.smoothed > t.prev*1.1:
		next, t.slaPressure = t.base*cfg.decrease, true
	default:
		next, t.slaPressure = t.base+float64(cfg.step), false
	}
	t.prev = t.smoothed
	if !t.frozen() {
		t.base = min(max(next, float64(cfg.minL)), float64(cfg.maxL))
	}
	t.effectiveLocked(now)
}

func (t *Throttle) frozen() bool {
	return t.c.killSwitch.Load() || t.c.emergency.Level() >= Level3
}

// effectiveLocked computes the limit in force and the regime (t.mu held).
func (t *Throttle) effectiveLocked(now time.Time) int32 {
	cfg := t.cfg.Load()
	if cfg == nil {
		return 0
	}
	mult := 1.0
	if b, ok := t.c.breakers.Load(cfg.breaker); ok {
		switch b.(*Breaker).State() {
		case StateOpen:
			mult = cfg.cbOpen
		case StateHalfOpen:
			mult = cfg.cbHalf
		}
	}
	switch lvl := t.c.emergency.Level(); {
	case lvl >= Level2:
		mult *= cfg.l2
	case lvl == Level1:
		mult *= cfg.l1
	}
	if mult == 1 && t.pressure < 1 {
		t.rampStart = now // the pressure stood down: ramp back up
	}
	t.pressure = mult
	ramp := 1.0
	if !t.rampStart.IsZero() && cfg.rampIv > 0 {
		switch steps := now.Sub(t.rampStart) / cfg.rampIv; {
		case steps < 1:
			ramp = 0.8
		case steps < 2:
			ramp = 0.9
		default:
			t.rampStart = time.Time{}
		}
	}
	eff := int32(max(t.base*mult*ramp, float64(cfg.minL)))
	switch {
	case t.frozen():
		t.regime = RegimeFrozen
	case t.slaPressure || mult < 1:
		t.regime = RegimeThrottling
	case ramp < 1 || (t.regime != RegimeNormal && t.base < float64(cfg.initial)):
		t.regime = RegimeRecovering
	default:
		t.regime = RegimeNormal
	}
	t.eff.Store(eff)
	return eff
}

// ThrottleState is a throttle in this instance.
type ThrottleState struct {
	Name     string
	Limit    int // in force
	Base     int // the gradient-steered limit before coupling
	MaxLimit int
	Regime   string
	InWindow int
	Rejected uint64
	RTT      time.Duration // smoothed
	Gradient float64
}

// State is the throttle's state now (the coupling re-read).
func (t *Throttle) State() ThrottleState {
	t.mu.Lock()
	defer t.mu.Unlock()
	eff := t.effectiveLocked(t.now())
	maxL := 0
	if cfg := t.cfg.Load(); cfg != nil {
		maxL = cfg.maxL
	}
	return ThrottleState{Name: t.name, Limit: int(eff), Base: int(t.base), MaxLimit: maxL, Regime: t.regime, InWindow: int(t.inWindow.Load()),
		Rejected: uint64(t.rejected.Load()), RTT: time.Duration(t.smoothed), Gradient: t.gradient}
}
