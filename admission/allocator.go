package admission

import (
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Demand is one instance's report for one rate limit, in calls a second.
type Demand struct {
	Name string
	// Wanted is the calls the instance was asked to admit over the last
	// period (admitted and refused).
	Wanted float64
	// Has is the share the instance holds now (a new leader learns the
	// outstanding shares from it).
	Has      float64
	Admitted float64
	Refused  float64
}

// Share is what an instance may admit until its lease ends.
type Share struct {
	Name      string
	Rate      float64 // calls a second
	Burst     int
	Lease     time.Duration
	Instances int
}

// InstanceShare is one instance's holding, for the status.
type InstanceShare struct {
	Instance string
	Share    float64
	Wanted   float64
	Admitted float64
	Refused  float64
	Expires  time.Time
}

type holder struct {
	share, wanted, admitted, refused float64
	expires                          time.Time
}

// Allocator divides each rate limit among the instances that ask, on the
// leader, in memory (soft state, as Doorman keeps it): every instance
// renews its share each renewal period, and a share it does not renew
// ends with its lease. Targets are max-min fair in the instances' demands
// (an instance that wants less than an equal part gets what it wants, the
// rest is split among the others; capacity nobody wants is split equally,
// so an instance whose demand grows has room until its next renewal).
// A grant never makes the shares outstanding exceed the limit: an
// instance whose target grew gets the growth as the others shrink to
// theirs at their renewals. A new leader, which knows no shares, spends
// one lease period learning them: it grants each instance what it says it
// holds, as far as the limit allows.
type Allocator struct {
	mu         sync.Mutex
	lease      time.Duration
	learnUntil time.Time
	limits     map[string]map[string]*holder
}

// NewAllocator starts an allocator on a leader elected at now.
func NewAllocator(lease time.Duration, now time.Time) *Allocator {
	return &Allocator{lease: lease, learnUntil: now.Add(lease), limits: map[string]map[string]*holder{}}
}

// Sync records an instance's demands and returns its shares of the limits
// configured (a demand for a limit not in limits gets no share). leaving
// gives every share back.
func (a *Allocator) Sync(now time.Time, instance string, demands []Demand, limits map[string]RateLimit, leaving bool) []Share {
	a.mu.Lock()
	defer a.mu.Unlock()
	for name := range a.limits {
		if _, ok := limits[name]; !ok {
			delete(a.limits, name) // the limit was removed
		}
	}
	if leaving {
		for _, hs := range a.limits {
			delete(hs, instance)
		}
		return nil
	}
	out := make([]Share, 0, len(demands))
	for _, d := range demands {
		l, ok := limits[d.Name]
		if !ok {
			continue
		}
		hs := a.limits[d.Name]
		if hs == nil {
			hs = map[string]*holder{}
			a.limits[d.Name] = hs
		}
		for id, h := range hs {
			if !now.Before(h.expires) {
				delete(hs, id)
			}
		}
		h := hs[instance]
		if h == nil {
			h = &holder{}
			hs[instance] = h
		}
		h.wanted, h.admitted, h.refused = max(d.Wanted, 0), max(d.Admitted, 0), max(d.Refused, 0)
		capacity := l.PerSecond()
		others := 0.0
		for id, o := range hs {
			if id != instance {
				others += o.share
			}
		}
		free := max(capacity-others, 0)
		var grant float64
		if now.Before(a.learnUntil) {
			grant = min(max(d.Has, 0), free)
		} else {
			grant = min(fairShares(capacity, hs)[instance], free)
		}
		h.share, h.expires = grant, now.Add(a.lease)
		// The instance's part of the burst, at least 2 (where the limit's
		// burst allows): a bucket of one token refuses a call that comes a
		// moment early.
		burst := min(l.Burst, 2)
		if capacity > 0 {
			burst = max(burst, int(math.Round(float64(l.Burst)*grant/capacity)))
		}
		out = append(out, Share{Name: d.Name, Rate: grant, Burst: burst, Lease: a.lease, Instances: len(hs)})
	}
	return out
}

// fairShares is the max-min fair division of capacity among the holders'
// demands, capacity nobody wants split equally.
func fairShares(capacity float64, hs map[string]*holder) map[string]float64 {
	ids := make([]string, 0, len(hs))
	for id := range hs {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		if hs[ids[i]].wanted != hs[ids[j]].wanted {
			return hs[ids[i]].wanted < hs[ids[j]].wanted
		}
		return ids[i] < ids[j]
	})
	out := make(map[string]float64, len(ids))
	left := capacity
	for i, id := range ids {
		give := min(hs[id].wanted, left/float64(len(ids)-i))
		out[id] = give
		left -= give
	}
	if left > 1e-9 && len(ids) > 0 {
		each := left / float64(len(ids))
		for _, id := range ids {
			out[id] += each
		}
	}
	return out
}

// Instances is the most instances holding shares of one limit.
func (a *Allocator) Instances() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, hs := range a.limits {
		n = max(n, len(hs))
	}
	return n
}

// Holds reports whether the instance holds a share of some limit.
func (a *Allocator) Holds(instance string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, hs := range a.limits {
		if _, ok := hs[instance]; ok {
			return true
		}
	}
	return false
}

// Status is each instance's holding of a limit, by instance id.
func (a *Allocator) Status(name string, now time.Time) []InstanceShare {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []InstanceShare
	for id, h := range a.limits[name] {
		if now.Before(h.expires) {
			out = append(out, InstanceShare{Instance: id, Share: h.share, Wanted: h.wanted, Admitted: h.admitted, Refused: h.refused, Expires: h.expires})
		}
	}
	slices.SortFunc(out, func(x, y InstanceShare) int { return strings.Compare(x.Instance, y.Instance) })
	return out
}
