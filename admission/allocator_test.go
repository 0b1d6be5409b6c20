package admission_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/admission"
)

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

const lease = 3 * time.Second

func limits(rate float64) map[string]admission.RateLimit {
	return map[string]admission.RateLimit{"api": {Rate: rate, Per: time.Second, Burst: 100, Scope: admission.ScopeGlobal}}
}

// converge renews every instance a few times, as they do each period.
func converge(a *admission.Allocator, at time.Time, wanted map[string]float64, l map[string]admission.RateLimit) map[string]float64 {
	got := map[string]float64{}
	has := map[string]float64{}
	for round := range 4 {
		for _, id := range []string{"a", "b", "c", "d", "e"} {
			w, ok := wanted[id]
			if !ok {
				continue
			}
			s := a.Sync(at.Add(time.Duration(round)*time.Second), id, []admission.Demand{{Name: "api", Wanted: w, Has: has[id]}}, l, false)
			has[id], got[id] = s[0].Rate, s[0].Rate
		}
	}
	return got
}

func near(x, y float64) bool { return math.Abs(x-y) < 1e-6 }

func TestSharesAreMaxMinFair(t *testing.T) {
	for _, tc := range []struct {
		wanted, want map[string]float64
	}{
		{map[string]float64{"a": 800, "b": 100}, map[string]float64{"a": 850, "b": 150}},
		{map[string]float64{"a": 2000, "b": 2000, "c": 100}, map[string]float64{"a": 450, "b": 450, "c": 100}},
		{map[string]float64{"a": 0, "b": 0}, map[string]float64{"a": 500, "b": 500}},
		{map[string]float64{"a": 5000, "b": 100, "c": 100, "d": 100}, map[string]float64{"a": 700, "b": 100, "c": 100, "d": 100}},
		{map[string]float64{"a": 5000, "b": 300, "c": 300, "d": 300}, map[string]float64{"a": 250, "b": 250, "c": 250, "d": 250}},
	} {
		a := admission.NewAllocator(lease, t0.Add(-time.Hour)) // past its learning period
		got := converge(a, t0, tc.wanted, limits(1000))
		for id, w := range tc.want {
			if !near(got[id], w) {
				t.Errorf("wanted %v: shares %v, want %v", tc.wanted, got, tc.want)
				break
			}
		}
	}
}

// Whatever the order of renewals and demands, the shares outstanding never
// exceed the limit.
func TestSharesNeverExceedTheLimit(t *testing.T) {
	a := admission.NewAllocator(lease, t0.Add(-time.Hour))
	rng := rand.New(rand.NewPCG(1, 2))
	held := map[string]admission.Share{}
	expires := map[string]time.Time{}
	now := t0
	for step := range 20000 {
		now = now.Add(time.Duration(rng.IntN(50)) * time.Millisecond)
		id := fmt.Sprintf("i%d", rng.IntN(12))
		if rng.IntN(100) == 0 {
			a.Sync(now, id, nil, limits(1000), true)
			delete(held, id)
			continue
		}
		s := a.Sync(now, id, []admission.Demand{{Name: "api", Wanted: rng.Float64() * 600, Has: held[id].Rate}}, limits(1000), false)
		held[id], expires[id] = s[0], now.Add(s[0].Lease)
		total := 0.0
		for hid, h := range held {
			if now.Before(expires[hid]) {
				total += h.Rate
			}
		}
		if total > 1000+1e-6 {
			t.Fatalf("step %d: %v outstanding", step, total)
		}
	}
}

func TestSharesEndWithTheLeaseOrOnLeaving(t *testing.T) {
	a := admission.NewAllocator(lease, t0.Add(-time.Hour))
	converge(a, t0, map[string]float64{"a": 1000, "b": 1000}, limits(1000))
	// b leaves: a gets everything at its next renewal.
	a.Sync(t0.Add(5*time.Second), "b", nil, limits(1000), true)
	if s := a.Sync(t0.Add(5*time.Second), "a", []admission.Demand{{Name: "api", Wanted: 1000, Has: 500}}, limits(1000), false); !near(s[0].Rate, 1000) || s[0].Instances != 1 {
		t.Fatalf("after b left: %+v", s)
	}
	// c stops renewing: its share ends with its lease, not before.
	a2 := admission.NewAllocator(lease, t0.Add(-time.Hour))
	converge(a2, t0, map[string]float64{"a": 1000, "c": 1000}, limits(1000))
	last := t0.Add(3 * time.Second)
	if s := a2.Sync(last.Add(lease-time.Millisecond), "a", []admission.Demand{{Name: "api", Wanted: 1000, Has: 500}}, limits(1000), false); !near(s[0].Rate, 500) {
		t.Fatalf("within c's lease: %+v", s)
	}
	if s := a2.Sync(last.Add(lease), "a", []admission.Demand{{Name: "api", Wanted: 1000, Has: 500}}, limits(1000), false); !near(s[0].Rate, 1000) {
		t.Fatalf("after c's lease: %+v", s)
	}
	// A removed limit gives nothing.
	if s := a2.Sync(last.Add(lease), "a", []admission.Demand{{Name: "api", Wanted: 1000}}, nil, false); len(s) != 0 {
		t.Fatalf("a limit not configured: %+v", s)
	}
}

// A new leader grants what instances say they hold during its first lease
// period, so shares granted by the old one are never granted twice.
func TestANewLeaderLearnsTheShares(t *testing.T) {
	a := admission.NewAllocator(lease, t0)
	if s := a.Sync(t0.Add(time.Second), "a", []admission.Demand{{Name: "api", Wanted: 1000, Has: 700}}, limits(1000), false); !near(s[0].Rate, 700) {
		t.Fatalf("learning a: %+v", s)
	}
	if s := a.Sync(t0.Add(time.Second), "new", []admission.Demand{{Name: "api", Wanted: 1000}}, limits(1000), false); !near(s[0].Rate, 0) {
		t.Fatalf("a newcomer while learning: %+v", s)
	}
	if s := a.Sync(t0.Add(time.Second), "b", []admission.Demand{{Name: "api", Wanted: 1000, Has: 500}}, limits(1000), false); !near(s[0].Rate, 300) {
		t.Fatalf("learning b, capped by what is free: %+v", s)
	}
	if s := a.Sync(t0.Add(lease), "a", []admission.Demand{{Name: "api", Wanted: 1000, Has: 700}}, limits(1000), false); !near(s[0].Rate, 1000.0/3) {
		t.Fatalf("after learning: %+v", s)
	}
}

func TestValidation(t *testing.T) {
	ok := admission.RateLimit{Rate: 1000, Burst: 100}.WithDefaults()
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for field, l := range map[string]admission.RateLimit{
		"rate":          {Rate: 0, Per: time.Second, Burst: 1, Scope: "global"},
		"per":           {Rate: 1, Per: -time.Second, Burst: 1, Scope: "global"},
		"burst":         {Rate: 1, Per: time.Second, Burst: 0, Scope: "global"},
		"scope":         {Rate: 1, Per: time.Second, Burst: 1, Scope: "galaxy"},
		"fallback_rate": {Rate: 1, Per: time.Second, Burst: 1, Scope: "global", FallbackRate: 2},
	} {
		if err := l.Validate(); err == nil || err.(interface{ Field() string }).Field() != field {
			t.Errorf("%s: %v", field, err)
		}
	}
	if err := (admission.Bulkhead{MaxConcurrent: 0}).Validate(); err == nil {
		t.Error("max_concurrent 0 accepted")
	}
	th := admission.DefaultThrottle()
	if err := th.Validate(); err != nil {
		t.Fatal(err)
	}
	th.SLACritical = th.SLAWarning
	if err := th.Validate(); err == nil {
		t.Error("sla_critical at sla_warning accepted")
	}
	if admission.CheckName("Bad Name") == nil || admission.CheckName("payments-api") != nil {
		t.Error("names")
	}
}
