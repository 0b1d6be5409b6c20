package circuit

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/internal/fsm"
)

// The leader's side of the breaker rules: what the leader proposes when
// reports arrive and when time passes. These functions only decide; the
// server proposes the commands they return, in order, as the leader
// (actor system:leader), and the replicas apply them with Apply.

// Outcome is one instance's aggregated outcomes for one breaker over one
// report interval, probe outcomes included.
type Outcome struct {
	Name                           string
	Successes, Failures, SlowCalls int64
	// Revision is the breaker revision the reporter had seen when its
	// interval began (0: unknown).
	Revision uint64
	// Probe outcomes of a HALF_OPEN breaker, for the probe window they
	// were permitted in.
	ProbeWindow                   uint64
	ProbeSuccesses, ProbeFailures int64
	// Merged outcomes (Merge) name the first instance they came from, how
	// many instances they came from and those whose outcomes had failures
	// or slow calls. Unmerged, Reporter is empty (Ingest's instance).
	Reporter  string
	Instances int
	Failing   []string
	// Held outcomes are successes an instance held back while healthy:
	// older than its other outcomes of the batch, they come first.
	Held bool
	// Cohort names the rollout cohorts of the reporting instances
	// (canary.CohortKey) and Latency their calls by duration; the breaker
	// rules ignore both, the canary judgment reads them.
	Cohort  string
	Latency []int64
}

// InstanceOutcomes is one instance's report batch.
type InstanceOutcomes struct {
	Instance string
	Outcomes []Outcome
}

// maxFailing bounds the failing instances a merged outcome names (the
// policy's min_reporters is at most 10,000).
const maxFailing = 10000

// Merge sums the batches of several instances per breaker, breaker
// revision and probe window, in the order first seen (held successes
// first). The leader's window
// takes the same calls, failures and slow calls and counts the same
// distinct failing instances as from the batches one by one; probe
// outcomes of one window add up. What merging gives up is the order of
// the batches merged together, as the order within one batch is unknown
// already: a success in any of them ends the consecutive-failure streak.
// The leader's work then grows with breakers, not instances.
func Merge(batches []InstanceOutcomes) []Outcome {
	type key struct {
		name          string
		revision, win uint64
		held          bool
		cohort        string
	}
	var out []Outcome
	at := map[key]int{}
	failing := map[key]map[string]bool{}
	for _, b := range batches {
		for _, o := range b.Outcomes {
			k := key{o.Name, o.Revision, o.ProbeWindow, o.Held, o.Cohort}
			i, ok := at[k]
			if !ok {
				i = len(out)
				at[k] = i
				out = append(out, Outcome{Name: o.Name, Revision: o.Revision, ProbeWindow: o.ProbeWindow, Reporter: b.Instance, Held: o.Held, Cohort: o.Cohort})
				failing[k] = map[string]bool{}
			}
			m := &out[i]
			for j, n := range o.Latency {
				if j >= len(m.Latency) {
					m.Latency = append(m.Latency, make([]int64, j+1-len(m.Latency))...)
				}
				m.Latency[j] += n
			}
			m.Successes += o.Successes
			m.Failures += o.Failures
			m.SlowCalls += o.SlowCalls
			m.ProbeSuccesses += o.ProbeSuccesses
			m.ProbeFailures += o.ProbeFailures
			m.Instances++
			if (o.Failures > 0 || o.SlowCalls > 0) && !failing[k][b.Instance] && len(m.Failing) < maxFailing {
				failing[k][b.Instance] = true
				m.Failing = append(m.Failing, b.Instance)
			}
		}
	}
	// Held successes are the oldest: first, so a count-based window
	// trims them before the newer outcomes.
	slices.SortStableFunc(out, func(a, b Outcome) int {
		switch {
		case a.Held == b.Held:
			return 0
		case a.Held:
			return -1
		}
		return 1
	})
	return out
}

// from names where an outcome came from, for reasons in the log.
func (o Outcome) from(instance string) string {
	switch {
	case o.Reporter == "":
		return instance
	case o.Instances > 1:
		return fmt.Sprintf("%s and %d other instances", o.Reporter, o.Instances-1)
	}
	return o.Reporter
}

// Ingested is what the leader does with one batch of reports.
type Ingested struct {
	// Commands to propose, in order.
	Commands []*raftv1.Command
	// Registered names the breakers the batch registers.
	Registered []string
	// Trips holds the evidence of each TRIP in Commands, by breaker.
	Trips map[string]Evidence
	// Refused names the unknown breakers the batch would register beyond
	// the room the caller gave; when any is refused, Commands is empty
	// (nothing of the batch is half-applied).
	Refused []string
}

// Ingest is the leader's reading of one batch of reports from instance,
// against the replicated breakers in kv and the leader's fleet windows ev:
//   - an unknown breaker is registered with the defaults policy;
//   - a CLOSED breaker's window takes the outcomes, and when the fleet's
//     evidence meets the policy a TRIP carrying the evidence is proposed
//     (the window starts over);
//   - probe outcomes of a HALF_OPEN breaker become a PROBE_RESULT;
//   - outcomes of pinned (forced) breakers are not counted.
//
// Later reports in the batch see the breakers as the earlier commands
// leave them.
func Ingest(kv fsm.KV, ev *Evaluator, defaults Policy, instance string, batch []Outcome, now time.Time, room int) Ingested {
	var out Ingested
	// Registration is bounded: count the unknown names first.
	unknown := map[string]bool{}
	for _, r := range batch {
		if _, ok := Get(kv, r.Name); !ok && !unknown[r.Name] {
			unknown[r.Name] = true
			if len(unknown) > room {
				out.Refused = append(out.Refused, r.Name)
			}
		}
	}
	if len(out.Refused) > 0 {
		return out
	}
	known := map[string]Breaker{}
	decided := map[string]bool{} // a PROBE_RESULT is pending: its outcome is the FSM's
	for _, r := range batch {
		ev.Seen(r.Name, now)
		if decided[r.Name] {
			continue
		}
		b, ok := known[r.Name]
		if !ok {
			b, ok = Get(kv, r.Name)
		}
		if !ok {
			raw, _ := json.Marshal(defaults)
			out.Commands = append(out.Commands, command("registered on first report from "+r.from(instance),
				&raftv1.CircuitCommand{Op: raftv1.CircuitCommand_UPSERT, Name: r.Name, PolicyJson: raw}))
			out.Registered = append(out.Registered, r.Name)
			b = Breaker{Name: r.Name, State: Closed, Policy: defaults}
		}
		known[r.Name] = b
		if b.Pinned {
			continue
		}
		switch b.State {
		case Closed:
			if r.Revision != 0 && r.Revision < b.Epoch {
				continue // recorded before the last reset, close or policy change
			}
			rep := Report{Failing: r.Failing, Successes: r.Successes, Failures: r.Failures, SlowCalls: r.SlowCalls, Held: r.Held, Epoch: b.Epoch}
			if r.Reporter == "" {
				rep.Instance = instance // one instance's outcome, not merged
			}
			evidence := ev.Observe(b.Name, b.Policy, rep, now)
			if evidence == nil {
				continue
			}
			raw, _ := json.Marshal(evidence)
			out.Commands = append(out.Commands, command("fleet evidence: "+evidence.Trigger,
				&raftv1.CircuitCommand{Op: raftv1.CircuitCommand_TRIP, Name: b.Name, EvidenceJson: raw}))
			if out.Trips == nil {
				out.Trips = map[string]Evidence{}
			}
			out.Trips[b.Name] = *evidence
			ev.Reset(b.Name)
			b.State = Open
			known[b.Name] = b
		case HalfOpen:
			if r.ProbeSuccesses == 0 && r.ProbeFailures == 0 {
				continue
			}
			out.Commands = append(out.Commands, command("probe outcomes from "+r.from(instance),
				&raftv1.CircuitCommand{Op: raftv1.CircuitCommand_PROBE_RESULT, Name: b.Name,
					ProbeWindow: r.ProbeWindow, Successes: r.ProbeSuccesses, Failures: r.ProbeFailures}))
			// Whether it closes is the FSM's decision; a breaker that closes
			// starts with an empty window, and one that reopens counts none.
			ev.Reset(b.Name)
			decided[b.Name] = true
		}
	}
	return out
}

// Proposals lists the time-driven transitions due at now: OPEN breakers past
// their recovery timeout go HALF_OPEN, expired pins are lifted. Each names
// what it acts on, so one proposed twice (by an old and a new leader)
// applies once.
func Proposals(kv fsm.KV, now time.Time) []*raftv1.Command {
	var out []*raftv1.Command
	for _, d := range Due(kv, now) {
		body := &raftv1.CircuitCommand{Op: d.Op, Name: d.Name}
		reason := "recovery timeout elapsed"
		if d.Op == raftv1.CircuitCommand_UNPIN {
			body.PinRevision = d.Revision
			reason = "force expired"
		} else {
			body.ProbeWindow = d.Revision // the OPEN period it acts on
		}
		out = append(out, command(reason, body))
	}
	return out
}

func command(reason string, body *raftv1.CircuitCommand) *raftv1.Command {
	return &raftv1.Command{Reason: reason, Version: 1, Body: &raftv1.Command_Circuit{Circuit: body}}
}

// IdleProposals lists the breakers the leader removes for idleness: CLOSED,
// unpinned, on the default policy (as auto-registration made them), and
// reported by no instance for idle (lastSeen). Each delete names the
// revision it saw, so a breaker that changed meanwhile stays.
func IdleProposals(kv fsm.KV, defaults Policy, lastSeen func(name string) time.Time, now time.Time, idle time.Duration) []*raftv1.Command {
	if idle <= 0 {
		return nil
	}
	var out []*raftv1.Command
	for _, b := range List(kv) {
		if b.State != Closed || b.Pinned || b.Policy != defaults || now.Sub(lastSeen(b.Name)) < idle {
			continue
		}
		cmd := command(fmt.Sprintf("no instance reported it for %v", idle), &raftv1.CircuitCommand{Op: raftv1.CircuitCommand_DELETE, Name: b.Name, IfRevision: b.Revision})
		cmd.Version = 4
		out = append(out, cmd)
	}
	return out
}
