package canary

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/internal/fsm"
)

// The leader's side: the cohorts' outcomes (Tracker), the judgment of a
// stage (Judge) and the commands time and evidence call for (Proposals).
// These functions only decide; the server proposes what they return.

// LatencyBounds are the upper bounds, in milliseconds, of the latency
// histogram outcome reports carry (one more bucket counts the rest).
var LatencyBounds = [...]float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000}

// LatencyBuckets is the latency histogram's length.
const LatencyBuckets = len(LatencyBounds) + 1

// Figures are one cohort's outcomes over the judged window.
type Figures struct {
	Requests  int64                 `json:"requests"`
	Failures  int64                 `json:"failures"`
	ErrorRate float64               `json:"error_rate"`
	P95Ms     float64               `json:"latency_p95_ms"`
	P99Ms     float64               `json:"latency_p99_ms"`
	Latency   [LatencyBuckets]int64 `json:"-"`
}

func (f *Figures) add(o Figures) {
	f.Requests += o.Requests
	f.Failures += o.Failures
	for i := range f.Latency {
		f.Latency[i] += o.Latency[i]
	}
}

func (f *Figures) finish() {
	if f.Requests > 0 {
		f.ErrorRate = float64(f.Failures) / float64(f.Requests)
	}
	f.P95Ms, f.P99Ms = quantile(f.Latency, 0.95), quantile(f.Latency, 0.99)
}

// quantile is the q-quantile of a histogram, interpolated linearly inside
// its bucket (0 for an empty one; the last bucket counts as its lower
// bound).
func quantile(h [LatencyBuckets]int64, q float64) float64 {
	var total int64
	for _, n := range h {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var seen float64
	for i, n := range h {
		if n == 0 {
			continue
		}
		if seen+float64(n) >= rank {
			lo := 0.0
			if i > 0 {
				lo = LatencyBounds[i-1]
			}
			if i >= len(LatencyBounds) {
				return lo
			}
			return lo + (LatencyBounds[i]-lo)*(rank-seen)/float64(n)
		}
		seen += float64(n)
	}
	return LatencyBounds[len(LatencyBounds)-1]
}

// BreakerFigures are one breaker's cohorts.
type BreakerFigures struct {
	Name     string  `json:"name"`
	Canary   Figures `json:"canary"`
	Baseline Figures `json:"baseline"`
}

// Verdicts.
const (
	Pass         = "pass"
	Fail         = "fail"
	Insufficient = "insufficient"
	Pending      = "pending"
)

// Evidence is what a judgment saw and concluded.
type Evidence struct {
	Verdict  string           `json:"verdict"`
	Reason   string           `json:"reason"`
	Stage    int              `json:"stage"`
	Canary   Figures          `json:"canary"`
	Baseline Figures          `json:"baseline"`
	Breakers []BreakerFigures `json:"breakers,omitempty"`
	Time     time.Time        `json:"time"`
}

// CohortKey names the cohorts of a report: the rollouts its instance is
// in the canary of, and those it is in the baseline of ("" for none).
func CohortKey(canary, baseline []string) string {
	if len(canary) == 0 && len(baseline) == 0 {
		return ""
	}
	c, b := append([]string{}, canary...), append([]string{}, baseline...)
	sort.Strings(c)
	sort.Strings(b)
	return "c=" + strings.Join(c, ",") + ";b=" + strings.Join(b, ",")
}

// parseCohort splits a CohortKey.
func parseCohort(key string) (canary, baseline []string) {
	c, b, _ := strings.Cut(key, ";b=")
	c = strings.TrimPrefix(c, "c=")
	if c != "" {
		canary = strings.Split(c, ",")
	}
	if b != "" {
		baseline = strings.Split(b, ",")
	}
	return canary, baseline
}

// slot is how finely the tracker keeps time.
const slot = 5 * time.Second

type cohortSlots struct {
	canary, baseline map[int64]*Figures // slot start (unix seconds) → figures
}

// Tracker is the leader's memory of the cohorts' outcomes per rollout and
// breaker, in 5-second slots over the evaluation window. It lives in the
// leader's memory only: a new leader starts judging from the reports it
// receives (the stage waits until it has enough).
//
// A rollout's figures start over when a judgment finds it in a new stage
// (its cohorts changed): what was counted before belongs to the stage
// before.
type Tracker struct {
	mu       sync.Mutex
	rollouts map[string]map[string]*cohortSlots // rollout → breaker → slots
	stages   map[string]time.Time               // rollout → the stage start its figures belong to
}

// NewTracker returns an empty tracker.
func NewTracker() *Tracker {
	return &Tracker{rollouts: map[string]map[string]*cohortSlots{}, stages: map[string]time.Time{}}
}

// maxBreakers bounds the breakers one rollout's figures keep.
const maxBreakers = 10000

// Observe counts one breaker's outcomes from instances of the cohorts key
// names.
func (t *Tracker) Observe(key, name string, successes, failures int64, latency []int64, now time.Time) {
	if key == "" || successes+failures <= 0 {
		return
	}
	canary, baseline := parseCohort(key)
	f := Figures{Requests: successes + failures, Failures: failures}
	copy(f.Latency[:], latency)
	at := now.Truncate(slot).Unix()
	t.mu.Lock()
	defer t.mu.Unlock()
	for cohort, ids := range [2][]string{canary, baseline} {
		inCanary := cohort == 0
		for _, id := range ids {
			br := t.rollouts[id]
			if br == nil {
				br = map[string]*cohortSlots{}
				t.rollouts[id] = br
			}
			cs := br[name]
			if cs == nil {
				if len(br) >= maxBreakers {
					continue
				}
				cs = &cohortSlots{canary: map[int64]*Figures{}, baseline: map[int64]*Figures{}}
				br[name] = cs
			}
			slots := cs.baseline
			if inCanary {
				slots = cs.canary
			}
			s := slots[at]
			if s == nil {
				s = &Figures{}
				slots[at] = s
			}
			s.add(f)
		}
	}
}

// Forget drops a rollout's figures.
func (t *Tracker) Forget(id string) {
	t.mu.Lock()
	delete(t.rollouts, id)
	delete(t.stages, id)
	t.mu.Unlock()
}

// Keep drops the figures of every rollout not in ids.
func (t *Tracker) Keep(ids map[string]bool) {
	t.mu.Lock()
	for id := range t.rollouts {
		if !ids[id] {
			delete(t.rollouts, id)
			delete(t.stages, id)
		}
	}
	t.mu.Unlock()
}

// figures sums a rollout's slots of the stage that began at stage, over
// the window since from, dropping older ones.
func (t *Tracker) figures(id string, stage, from time.Time) (canary, baseline Figures, breakers []BreakerFigures) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if known, ok := t.stages[id]; !ok || !known.Equal(stage) {
		if ok {
			delete(t.rollouts, id) // the stage before's
		}
		t.stages[id] = stage
	}
	// Slots from before the window, or before the stage's own slot, go.
	cut := max(from.Truncate(slot).Unix(), stage.Truncate(slot).Unix())
	for name, cs := range t.rollouts[id] {
		bf := BreakerFigures{Name: name}
		for at, f := range cs.canary {
			if at < cut {
				delete(cs.canary, at)
				continue
			}
			bf.Canary.add(*f)
		}
		for at, f := range cs.baseline {
			if at < cut {
				delete(cs.baseline, at)
				continue
			}
			bf.Baseline.add(*f)
		}
		if bf.Canary.Requests+bf.Baseline.Requests == 0 {
			continue
		}
		bf.Canary.finish()
		bf.Baseline.finish()
		canary.add(bf.Canary)
		baseline.add(bf.Baseline)
		breakers = append(breakers, bf)
	}
	canary.finish()
	baseline.finish()
	sort.Slice(breakers, func(i, j int) bool { return breakers[i].Name < breakers[j].Name })
	return canary, baseline, breakers
}

// Judge compares a CANARY rollout's cohorts over its stage's evaluation
// window (never before the stage began) with the stage's criteria:
//   - fewer canary calls than min_requests: insufficient (the stage waits);
//   - a criterion broken beyond doubt (with 99.5 % confidence, below), by
//     all breakers together or by one breaker with min_requests canary
//     calls of its own: fail;
//   - a criterion broken by the figures seen but not beyond doubt:
//     pending, until more calls settle it either way;
//   - otherwise pass once the stage's duration has passed, pending before.
//
// The judgment runs four times a second on figures that grow call by
// call; judging the bare ratios would roll back a healthy stage whenever
// a handful of early calls happened to fail (3 of 62 calls at a 1 % error
// rate: 4.8 %). So an error rate fails only when the lower bound of its
// Wilson score interval exceeds the limit, and an increase over the
// baseline only when the difference less its margin does (z = 2.576).
func (t *Tracker) Judge(r Rollout, now time.Time) Evidence {
	st := r.Stages[r.Stage]
	crit := st.Criteria.WithFloor(r.Tier)
	canary, baseline, breakers := t.figures(r.ID, r.StageStartedAt, now.Add(-crit.EvaluationWindow))
	ev := Evidence{Stage: r.Stage, Canary: canary, Baseline: baseline, Breakers: breakers, Time: now}
	if canary.Requests < crit.MinRequests {
		ev.Verdict, ev.Reason = Insufficient, fmt.Sprintf("%d canary calls of the %d a verdict needs", canary.Requests, crit.MinRequests)
		return ev
	}
	doubt := ""
	judge := func(what string, c, b Figures) bool {
		why, sure := crit.broken(what, c, b)
		if why != "" && sure {
			ev.Verdict, ev.Reason = Fail, why
			return true
		}
		if why != "" && doubt == "" {
			doubt = why
		}
		return false
	}
	if judge("all breakers", canary, baseline) {
		return ev
	}
	for _, b := range breakers {
		if b.Canary.Requests >= crit.MinRequests && judge("breaker "+b.Name, b.Canary, b.Baseline) {
			return ev
		}
	}
	if doubt != "" {
		ev.Verdict, ev.Reason = Pending, doubt+", not yet beyond doubt: waiting for more calls"
		return ev
	}
	if elapsed := now.Sub(r.StageStartedAt); elapsed < st.Duration {
		ev.Verdict, ev.Reason = Pending, fmt.Sprintf("criteria hold; %v of the stage's %v left", (st.Duration-elapsed).Round(time.Second), st.Duration)
		return ev
	}
	ev.Verdict, ev.Reason = Pass, fmt.Sprintf("criteria held for the stage's %v (%d canary calls, error rate %.2f%%)", st.Duration, canary.Requests, canary.ErrorRate*100)
	return ev
}

// z is the one-sided 99.5 % normal quantile the error-rate judgments use.
const z = 2.576

// wilsonLower is the lower bound of the Wilson score interval of failures
// in n calls.
func wilsonLower(failures, n int64) float64 {
	if n == 0 {
		return 0
	}
	p, nf := float64(failures)/float64(n), float64(n)
	centre := p + z*z/(2*nf)
	margin := z * math.Sqrt(p*(1-p)/nf+z*z/(4*nf*nf))
	return max(0, (centre-margin)/(1+z*z/nf))
}

// broken names the first criterion the cohorts break ("" for none), and
// whether beyond doubt. The baseline is compared only when it has
// min_requests calls itself.
func (c Criteria) broken(what string, canary, baseline Figures) (string, bool) {
	if canary.ErrorRate > c.ErrorRateAbsoluteMax {
		lo := wilsonLower(canary.Failures, canary.Requests)
		return fmt.Sprintf("%s: canary error rate %.2f%% exceeds %.2f%% (at least %.2f%% with 99.5%% confidence)", what,
			canary.ErrorRate*100, c.ErrorRateAbsoluteMax*100, lo*100), lo > c.ErrorRateAbsoluteMax
	}
	if baseline.Requests < c.MinRequests {
		return "", false
	}
	if d := canary.ErrorRate - baseline.ErrorRate; d > c.ErrorRateIncreaseMax {
		// The difference's margin, from smoothed rates so that a cohort
		// without failures still has some spread.
		sc := (float64(canary.Failures) + 1) / (float64(canary.Requests) + 2)
		sb := (float64(baseline.Failures) + 1) / (float64(baseline.Requests) + 2)
		margin := z * math.Sqrt(sc*(1-sc)/float64(canary.Requests)+sb*(1-sb)/float64(baseline.Requests))
		return fmt.Sprintf("%s: canary error rate %.2f%% is %.2f points above the baseline's %.2f%% (at most %.2f; margin %.2f)", what,
			canary.ErrorRate*100, d*100, baseline.ErrorRate*100, c.ErrorRateIncreaseMax*100, margin*100), d-margin > c.ErrorRateIncreaseMax
	}
	if canary.P95Ms == 0 || baseline.P95Ms == 0 {
		return "", false // no latency reported
	}
	if d := canary.P95Ms - baseline.P95Ms; d > c.LatencyP95DeltaMs {
		return fmt.Sprintf("%s: canary p95 %.1f ms is %.1f ms above the baseline's %.1f ms (at most %.0f)", what, canary.P95Ms, d, baseline.P95Ms, c.LatencyP95DeltaMs), true
	}
	if baseline.P99Ms > 0 && (canary.P99Ms-baseline.P99Ms)/baseline.P99Ms > c.LatencyP99DeltaPct {
		return fmt.Sprintf("%s: canary p99 %.1f ms is %.0f%% above the baseline's %.1f ms (at most %.0f%%)", what, canary.P99Ms,
			(canary.P99Ms-baseline.P99Ms)/baseline.P99Ms*100, baseline.P99Ms, c.LatencyP99DeltaPct*100), true
	}
	return "", false
}

// SystemActor is who the cluster's own rollout steps are audited as.
const SystemActor = "system:canary"

func command(reason string, body *raftv1.CanaryCommand) *raftv1.Command {
	return &raftv1.Command{Actor: SystemActor, Reason: reason, Version: 7, Body: &raftv1.Command_Canary{Canary: body}}
}

// Proposals are the rollout steps due at now, given the global emergency
// level in gate:
//   - LEVEL_3 rolls every active rollout back, LEVEL_2 pauses every one in
//     CANARY (the interlock; they do not resume by themselves);
//   - a CANARY rollout whose judgment fails is rolled back at once, one
//     that passes is promoted when its stage promotes by itself;
//   - the watchdog flags a rollout in CANARY over twice its stage's
//     duration, or PAUSED over 30 minutes;
//   - a finished rollout past retention is purged.
//
// Judgments are passed to judge, which keeps the figures (the tracker).
func Proposals(kv fsm.KV, judge func(Rollout, time.Time) Evidence, gate Gate, now time.Time) []*raftv1.Command {
	var out []*raftv1.Command
	for _, r := range List(kv) {
		started := r.StageStartedAt.UnixNano()
		switch {
		case r.State.Terminal():
			if now.Sub(r.FinishedAt) >= Retention {
				out = append(out, command("retention", &raftv1.CanaryCommand{Op: raftv1.CanaryCommand_PURGE, Id: r.ID, Automatic: true}))
			}
		case gate.Level >= 3 && (r.State == Canary || r.State == Paused):
			out = append(out, command("emergency LEVEL_3: the interlock rolls back every rollout",
				&raftv1.CanaryCommand{Op: raftv1.CanaryCommand_ROLLBACK, Id: r.ID, Automatic: true, Interlock: true}))
		case gate.Level == 2 && r.State == Canary:
			out = append(out, command("emergency LEVEL_2: the interlock pauses every rollout",
				&raftv1.CanaryCommand{Op: raftv1.CanaryCommand_PAUSE, Id: r.ID, Automatic: true, Interlock: true, StageStartedUnixNano: started}))
		case r.State == Canary:
			ev := judge(r, now)
			evJSON, _ := json.Marshal(ev)
			switch {
			case ev.Verdict == Fail:
				out = append(out, command("canary judgment: "+ev.Reason, &raftv1.CanaryCommand{Op: raftv1.CanaryCommand_ROLLBACK, Id: r.ID,
					Automatic: true, EvidenceJson: evJSON, StageStartedUnixNano: started}))
				continue
			case ev.Verdict == Pass && r.Stages[r.Stage].AutoPromote:
				out = append(out, command("canary judgment: "+ev.Reason, &raftv1.CanaryCommand{Op: raftv1.CanaryCommand_PROMOTE, Id: r.ID,
					Automatic: true, EvidenceJson: evJSON, CheckStage: true, ExpectedStageIndex: int32(r.Stage), StageStartedUnixNano: started}))
				continue
			}
			if !r.Stuck && now.Sub(r.StageStartedAt) > 2*r.Stages[r.Stage].Duration {
				out = append(out, command(fmt.Sprintf("watchdog: in stage %q for %v, over twice its duration", r.Stages[r.Stage].Name, now.Sub(r.StageStartedAt).Round(time.Second)),
					&raftv1.CanaryCommand{Op: raftv1.CanaryCommand_FLAG_STUCK, Id: r.ID, Automatic: true}))
			}
		case r.State == Paused && !r.Stuck && now.Sub(r.PausedAt) > StuckPaused:
			out = append(out, command(fmt.Sprintf("watchdog: paused for %v", now.Sub(r.PausedAt).Round(time.Second)),
				&raftv1.CanaryCommand{Op: raftv1.CanaryCommand_FLAG_STUCK, Id: r.ID, Automatic: true}))
		}
	}
	return out
}
