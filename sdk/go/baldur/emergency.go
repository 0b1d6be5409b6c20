package baldur

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"google.golang.org/grpc"
)

// Level is an emergency level.
type Level int

// Levels, as Baldur names them.
const (
	LevelNormal Level = iota
	Level1
	Level2
	Level3
)

func (l Level) String() string { return pb.EmergencyLevel_Value(l).String() }

// Tier is a request's criticality.
type Tier int

// Tiers.
const (
	TierCritical Tier = iota + 1
	TierStandard
	TierNonEssential
)

// GlobalScope is the scope Level and Admit read.
const GlobalScope = "global"

// admission holds the admitted fraction per tier (index Tier-1).
type admission [3]float64

type emergencySnapshot struct {
	levels   map[string]Level
	rules    [4]admission
	revision uint64
	at       time.Time
}

// Emergency answers emergency-level questions from the local snapshot.
type Emergency struct {
	snap       atomic.Pointer[emergencySnapshot]
	staleAfter time.Duration
	// The client's system control: disabled (the kill switch) and dry run.
	disabled, dryRun *atomic.Bool
	// When the client's last outcome report was answered (Unix ns).
	answered  *atomic.Int64
	wouldShed atomic.Uint64
}

func newEmergency(staleAfter time.Duration) *Emergency {
	e := &Emergency{staleAfter: staleAfter}
	s := &emergencySnapshot{levels: map[string]Level{}}
	for l := range s.rules {
		s.rules[l] = admission{1, 1, 1}
	}
	e.snap.Store(s)
	return e
}

// Level is the global scope's current level.
func (e *Emergency) Level() Level { return e.snap.Load().levels[GlobalScope] }

// LevelOf is a named scope's current level.
func (e *Emergency) LevelOf(scope string) Level { return e.snap.Load().levels[scope] }

// Revision is the cluster revision of the state held.
func (e *Emergency) Revision() uint64 { return e.snap.Load().revision }

// Stale reports whether no update arrived within the stale bound, or none
// ever did. An answered outcome report counts as an update: the member
// that answered leaves out the heartbeats of this connection's watches
// while it answers.
func (e *Emergency) Stale() bool {
	s := e.snap.Load()
	if s.at.IsZero() {
		return true
	}
	at := s.at.UnixNano()
	if e.answered != nil {
		at = max(at, e.answered.Load())
	}
	return time.Since(time.Unix(0, at)) > e.staleAfter
}

// Admit decides whether a request of tier t may proceed at the global
// level: tiers admitted fully pass, tiers blocked are shed, and partial
// fractions admit that share of requests at random.
func (e *Emergency) Admit(t Tier) bool { return e.AdmitIn(GlobalScope, t) }

// AdmitIn is Admit for a named scope.
//
// While the system is disabled (the kill switch) every request is
// admitted; in dry run the decision is counted (WouldShed) and the
// request admitted.
func (e *Emergency) AdmitIn(scope string, t Tier) bool {
	if t < TierCritical || t > TierNonEssential {
		t = TierStandard
	}
	s := e.snap.Load()
	f := s.rules[s.levels[scope]][t-1]
	admit := f >= 1 || (f > 0 && rand.Float64() < f)
	if admit || e.disabled != nil && e.disabled.Load() {
		return true
	}
	if e.dryRun != nil && e.dryRun.Load() {
		e.wouldShed.Add(1)
		return true
	}
	return false
}

// WouldShed counts the requests Admit let through in dry run that it
// would have shed.
func (e *Emergency) WouldShed() uint64 { return e.wouldShed.Load() }

// apply merges a watch message into a new snapshot.
func (e *Emergency) apply(msg *pb.WatchEmergencyResponse) {
	old := e.snap.Load()
	next := &emergencySnapshot{levels: old.levels, rules: old.rules, revision: msg.Revision, at: time.Now()}
	if !msg.Snapshot && len(msg.States) == 0 {
		// A heartbeat or a configuration change: the levels (never
		// modified once stored) are the same map.
		next.applyConfig(msg.Config)
		e.snap.Store(next)
		return
	}
	next.levels = make(map[string]Level, len(old.levels)+len(msg.States))
	if !msg.Snapshot {
		for k, v := range old.levels {
			next.levels[k] = v
		}
	}
	for _, st := range msg.States {
		if st.Active {
			next.levels[st.Scope] = Level(st.Level)
		} else {
			next.levels[st.Scope] = LevelNormal
		}
	}
	next.applyConfig(msg.Config)
	e.snap.Store(next)
}

// applyConfig sets the admission rules of cfg's levels (nil: none).
func (s *emergencySnapshot) applyConfig(cfg *pb.EmergencyConfig) {
	if cfg == nil {
		return
	}
	for _, r := range cfg.Levels {
		if l := int(r.Level); l > 0 && l < len(s.rules) && r.Admission != nil {
			s.rules[l] = admission{r.Admission.Critical, r.Admission.Standard, r.Admission.NonEssential}
		}
	}
}

func (c *Client) watchEmergency(ctx context.Context) {
	client := pb.NewEmergencyServiceClient(c.conn)
	delay := c.opts.minBackoff
	first := true
	for ctx.Err() == nil {
		if !first {
			c.reconnects.Add(1)
		}
		first = false
		rev := c.emergency.Revision()
		stream, err := client.WatchEmergency(c.callContext(ctx), &pb.WatchEmergencyRequest{FromRevision: rev}, grpc.WaitForReady(true))
		if err == nil {
			for {
				msg, rerr := stream.Recv()
				if rerr != nil {
					err = rerr
					break
				}
				delta := len(msg.States) > 0 || msg.Config != nil || msg.RuntimeConfig != nil
				switch {
				case msg.Snapshot:
					c.snapshots.Add(1)
				case delta:
					c.deltas.Add(1)
				} // otherwise a heartbeat: it only refreshes the age
				c.emergency.apply(msg)
				tracked := c.config.tracking()
				c.config.apply(msg.RuntimeConfig)
				if !tracked && c.config.tracking() {
					// A rollout now judges this instance: its report loop,
					// asleep for up to the idle interval, reports from here
					// on at every interval (nothing held back).
					c.kickReporter()
				}
				if f := c.opts.onUpdate; f != nil && (msg.Snapshot || delta) {
					// After the runtime configuration too: the callback
					// sees every part of the change applied.
					u := Update{Kind: UpdateEmergency, Revision: msg.Revision, Snapshot: msg.Snapshot}
					for _, st := range msg.States {
						u.Names = append(u.Names, st.Scope)
					}
					f(u)
				}
				c.readyOnce.Do(func() { close(c.ready) })
				delay = c.opts.minBackoff
			}
		}
		if ctx.Err() != nil {
			return
		}
		c.opts.logger.Debug("baldur.watch_reconnecting", "stream", "emergency", "revision", rev, "err", err)
		if !c.backoff(ctx, &delay) {
			return
		}
	}
}
