package server

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/audit"
	"github.com/baldurhq/baldurd/circuit"
	"github.com/baldurhq/baldurd/coordination"
	"github.com/baldurhq/baldurd/dlq"
	"github.com/baldurhq/baldurd/emergency"
	"github.com/baldurhq/baldurd/raftstore"
	"google.golang.org/protobuf/proto"
)

// requestWindow is how long a request id is remembered: a client retry of a
// write within this window is answered with the original revision.
const requestWindow = 10 * time.Minute

// applyResult is what the FSM hands back to the proposer.
type applyResult struct {
	Revision  uint64
	Duplicate bool
	Err       error
	// Granted reports a circuit probe permit.
	Granted bool
	// Coord is the coordination domain's result (lease, job claim).
	Coord coordination.Result
	// DLQ is the dlq domain's result (stored or changed entry).
	DLQ dlq.Result
}

// change is what a domain function did, in the form the audit trail needs.
type change struct {
	Changed bool
	Granted bool
	Coord   coordination.Result
	DLQ     dlq.Result
	Action  string
	Target  string
	Before  any
	After   any
}

// applier dispatches committed commands to the domains. It is the only
// place that does.
type applier struct {
	auditKey []byte
	log      *slog.Logger
	metrics  *metrics
	applied  func(index uint64, changed topics)

	// What the current batch changed (the FSM goroutine only).
	touched  topics
	commands bool
}

var errUndecodable = errors.New("server: command does not decode")

// Applied reports the topics the batch changed; after a restore, or a
// batch without commands, every topic (watchers re-read and find out).
func (a *applier) Applied(index uint64) {
	t := a.touched
	if !a.commands {
		t = topicAll
	}
	a.touched, a.commands = 0, false
	if a.applied != nil {
		a.applied(index, t)
	}
}

// errUnsupported is a command this binary cannot apply: an unknown body
// or a newer command version.
var errUnsupported = errors.New("server: command not supported by this binary")

// decodeCommand decodes a log entry. Bytes that do not decode get
// errUndecodable; a command this binary does not know gets errUnsupported
// (with the command, so the caller can check Ignorable).
func decodeCommand(data []byte) (*raftv1.Command, error) {
	cmd := &raftv1.Command{}
	if err := proto.Unmarshal(data, cmd); err != nil {
		return nil, fmt.Errorf("%w: %v", errUndecodable, err)
	}
	if cmd.Body == nil || cmd.Version > CommandVersion {
		return cmd, fmt.Errorf("%w: body %T, version %d (this binary applies up to %d)", errUnsupported, cmd.Body, cmd.Version, CommandVersion)
	}
	return cmd, nil
}

func (a *applier) Apply(kv raftstore.KV, index, term uint64, data []byte) any {
	cmd, err := decodeCommand(data)
	switch {
	case errors.Is(err, errUndecodable):
		// Every replica fails the same way on the same bytes: refusing it
		// is deterministic and changes nothing.
		return applyResult{Err: err}
	case errors.Is(err, errUnsupported) && cmd.Ignorable:
		return applyResult{Revision: index}
	case err != nil:
		// Applying part of the log would silently diverge from the
		// replicas that understand this command.
		panic(fmt.Sprintf("server: entry %d: %v; upgrade this node", index, err))
	}
	if id := cmd.RequestId; id != "" {
		if v := kv.Get(bucketRequests, []byte(id)); len(v) == 8 {
			return applyResult{Revision: binary.BigEndian.Uint64(v), Duplicate: true}
		}
	}
	m := emergency.Meta{Index: index, Time: time.Unix(0, cmd.TimeUnixNano).UTC(), Actor: cmd.Actor, Reason: cmd.Reason}
	a.commands = true
	a.touched |= topicOf(cmd)
	ch, err := dispatch(kv, m, cmd)
	if err != nil {
		return applyResult{Err: err}
	}
	// One audit record per change; a batch of stores is one per store, in
	// the name of the store's caller.
	if ch.DLQ.Batch == nil {
		a.record(kv, index, m.Time, cmd, ch.Changed, cmd.Actor, ch.Action, ch.Target, ch.Before, ch.After)
	}
	for i := range ch.DLQ.Batch {
		r := &ch.DLQ.Batch[i].Result
		a.record(kv, index, m.Time, cmd, r.Changed, r.Actor, "dlq."+r.Action, r.Target, r.Before, r.After)
	}
	rememberRequest(kv, cmd.RequestId, index, m.Time)
	return applyResult{Revision: index, Granted: ch.Granted, Coord: ch.Coord, DLQ: ch.DLQ}
}

// record appends the audit record of a change (actor "" is the command's)
// and counts it.
func (a *applier) record(kv raftstore.KV, index uint64, at time.Time, cmd *raftv1.Command, changed bool, actor, action, target string, before, after any) {
	if !changed {
		return
	}
	if actor == "" {
		actor = cmd.Actor
	}
	audit.Append(kv, a.auditKey, audit.Record{
		Revision: index, Time: at, Actor: actor, Reason: cmd.Reason,
		Action: action, Target: target, Before: jsonText(before), After: jsonText(after),
	})
	if a.metrics == nil {
		return
	}
	a.metrics.changes.WithLabelValues(action).Inc()
	if after, ok := after.(circuit.Breaker); ok {
		if before, ok := before.(circuit.Breaker); !ok || before.State != after.State {
			a.metrics.transitions.WithLabelValues(after.Name, after.State.String(), after.Evidence.Trigger).Inc()
		}
	}
}

func dispatch(kv raftstore.KV, m emergency.Meta, cmd *raftv1.Command) (change, error) {
	fromEmergency := func(r emergency.Result, err error) (change, error) {
		if err != nil {
			return change{}, err
		}
		return change{Changed: r.Changed, Action: "emergency." + r.Action, Target: "emergency/" + r.Scope, Before: r.Before, After: r.After}, nil
	}
	switch b := cmd.Body.(type) {
	case *raftv1.Command_EmergencyTrigger:
		return fromEmergency(emergency.Trigger(kv, m, b.EmergencyTrigger))
	case *raftv1.Command_EmergencyRelease:
		return fromEmergency(emergency.Release(kv, m, b.EmergencyRelease))
	case *raftv1.Command_EmergencyExpire:
		return fromEmergency(emergency.Expire(kv, m, b.EmergencyExpire))
	case *raftv1.Command_EmergencyStep:
		return fromEmergency(emergency.Step(kv, m, b.EmergencyStep))
	case *raftv1.Command_EmergencyConfig:
		return fromEmergency(emergency.SetConfig(kv, m, b.EmergencyConfig))
	case *raftv1.Command_MemberUpsert:
		return upsertMember(kv, b.MemberUpsert)
	case *raftv1.Command_MemberRemove:
		return removeMember(kv, b.MemberRemove)
	case *raftv1.Command_Circuit:
		r, err := circuit.Apply(kv, circuit.Meta(m), b.Circuit)
		if err != nil {
			return change{}, err
		}
		return change{Changed: r.Changed, Granted: r.Granted, Action: "circuit." + r.Action, Target: "circuit/" + r.Name, Before: r.Before, After: r.After}, nil
	case *raftv1.Command_Coordination:
		r, err := coordination.Apply(kv, coordination.Meta(m), b.Coordination)
		if err != nil {
			return change{}, err
		}
		return change{Changed: r.Changed, Coord: r, Action: "coordination." + r.Action, Target: r.Target, Before: r.Before, After: r.After}, nil
	case *raftv1.Command_Dlq:
		r, err := dlq.Apply(kv, dlq.Meta(m), b.Dlq)
		if err != nil {
			return change{}, err
		}
		return change{Changed: r.Changed, DLQ: r, Action: "dlq." + r.Action, Target: r.Target, Before: r.Before, After: r.After}, nil
	case *raftv1.Command_AuditNote:
		n := b.AuditNote
		return change{Changed: true, Action: n.GetAction(), Target: n.GetTarget(), After: n.GetDetail()}, nil
	}
	panic(fmt.Sprintf("server: command body %T has no dispatch", cmd.Body))
}

// rememberRequest records a request id and forgets those older than the
// window, using the command's time so every replica prunes alike.
func rememberRequest(kv raftstore.KV, id string, index uint64, now time.Time) {
	cutoff := uint64(now.Add(-requestWindow).UnixNano())
	var stale [][]byte
	kv.Scan(bucketRequestsByTime, nil, false, func(k, _ []byte) bool {
		if binary.BigEndian.Uint64(k[:8]) >= cutoff {
			return false
		}
		stale = append(stale, append([]byte(nil), k...))
		return true
	})
	for _, k := range stale {
		kv.Delete(bucketRequestsByTime, k)
		kv.Delete(bucketRequests, k[8:])
	}
	if id == "" {
		return
	}
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], index)
	kv.Put(bucketRequests, []byte(id), v[:])
	key := make([]byte, 8, 8+len(id))
	binary.BigEndian.PutUint64(key, uint64(now.UnixNano()))
	kv.Put(bucketRequestsByTime, append(key, id...), nil)
}

func jsonText(v any) string {
	if v == nil {
		return ""
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("server: encode audit document %T: %v", v, err))
	}
	return string(b)
}

// memberRecord is a row of the replicated member table.
type memberRecord struct {
	ID             string `json:"id"`
	RaftAddr       string `json:"raft_addr"`
	GRPCAddr       string `json:"grpc_addr"`
	HTTPAddr       string `json:"http_addr"`
	CommandVersion uint32 `json:"command_version"`
}

func getMember(kv raftstore.KV, id string) (memberRecord, bool) {
	v := kv.Get(bucketMembers, []byte(id))
	if v == nil {
		return memberRecord{}, false
	}
	var m memberRecord
	if err := json.Unmarshal(v, &m); err != nil {
		return memberRecord{}, false
	}
	return m, true
}

func listMembers(kv raftstore.KV) map[string]memberRecord {
	out := map[string]memberRecord{}
	kv.Scan(bucketMembers, nil, false, func(_, v []byte) bool {
		var m memberRecord
		if json.Unmarshal(v, &m) == nil {
			out[m.ID] = m
		}
		return true
	})
	return out
}

func upsertMember(kv raftstore.KV, c *raftv1.MemberUpsert) (change, error) {
	next := memberRecord{ID: c.GetId(), RaftAddr: c.GetRaftAddr(), GRPCAddr: c.GetGrpcAddr(), HTTPAddr: c.GetHttpAddr(), CommandVersion: c.GetCommandVersion()}
	if next.ID == "" {
		return change{}, &fieldError{field: "id", reason: "INVALID_ARGUMENT", msg: "member id is required"}
	}
	before, ok := getMember(kv, next.ID)
	if ok && before == next {
		return change{}, nil
	}
	kv.Put(bucketMembers, []byte(next.ID), []byte(jsonText(next)))
	var b any
	if ok {
		b = before
	}
	return change{Changed: true, Action: "cluster.member_upsert", Target: "member/" + next.ID, Before: b, After: next}, nil
}

func removeMember(kv raftstore.KV, c *raftv1.MemberRemove) (change, error) {
	before, ok := getMember(kv, c.GetId())
	if !ok {
		return change{}, nil
	}
	kv.Delete(bucketMembers, []byte(c.GetId()))
	return change{Changed: true, Action: "cluster.member_remove", Target: "member/" + c.GetId(), Before: before}, nil
}
