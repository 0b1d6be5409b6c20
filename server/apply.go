package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/audit"
	"github.com/baldurhq/baldurd/canary"
	"github.com/baldurhq/baldurd/circuit"
	"github.com/baldurhq/baldurd/coordination"
	"github.com/baldurhq/baldurd/dlq"
	"github.com/baldurhq/baldurd/emergency"
	"github.com/baldurhq/baldurd/governance"
	"github.com/baldurhq/baldurd/idempotency"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/notify"
	"github.com/baldurhq/baldurd/raftstore"
	"google.golang.org/protobuf/proto"
)

// requestWindow is how long a request id is remembered: a client retry of a
// write within this window is answered with the original revision.
const requestWindow = 10 * time.Minute

// applyResult is what the FSM hands back to the proposer: the revision the
// command applied at (or, for a remembered request id, first applied at),
// the domain's error, and the domain's own result (Value of fsm.Applied).
type applyResult struct {
	Revision  uint64
	Duplicate bool
	Err       error
	Value     any
}

// resultOf is the domain result of type T an applied command handed back
// (T's zero value for a duplicate request or an error).
func resultOf[T any](r applyResult) T {
	v, _ := r.Value.(T)
	return v
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
	if b := cmd.GetBatch(); b != nil {
		// Group commit: each command as if it were its own entry at this
		// index; the batch's outcome is theirs, in order.
		out := make([]applyResult, len(b.GetCommands()))
		for i, sub := range b.GetCommands() {
			if sub.GetBatch() != nil || sub.Body == nil {
				out[i] = applyResult{Err: invalidField("command", "a batch holds commands, not batches")}
				continue
			}
			if sub.Version > CommandVersion {
				panic(fmt.Sprintf("server: entry %d: a batched command of version %d (this binary applies up to %d); upgrade this node", index, sub.Version, CommandVersion))
			}
			out[i] = a.applyOne(kv, index, sub)
		}
		return applyResult{Revision: index, Value: out}
	}
	return a.applyOne(kv, index, cmd)
}

// applyOne applies one command (alone in its entry or part of a batch).
func (a *applier) applyOne(kv raftstore.KV, index uint64, cmd *raftv1.Command) applyResult {
	var err error
	if id := cmd.RequestId; id != "" {
		if v := kv.Get(bucketRequests, []byte(id)); len(v) >= 8 {
			// A retry of the same write is answered with its revision; the
			// same id on a different write is refused, never dropped.
			if len(v) == 8+sha256.Size && !bytes.Equal(v[8:], requestFingerprint(cmd)) {
				return applyResult{Err: fmt.Errorf("%w: request id %q was used for another write (revision %d)", errRequestIDReused, id, binary.BigEndian.Uint64(v))}
			}
			return applyResult{Revision: binary.BigEndian.Uint64(v), Duplicate: true}
		}
	}
	m := fsm.Meta{Index: index, Time: time.Unix(0, cmd.TimeUnixNano).UTC(), Actor: cmd.Actor, Reason: cmd.Reason}
	a.commands = true
	a.touched |= topicOf(cmd)
	h, ok := handlers[bodyTypeOf(cmd)]
	if !ok {
		panic(fmt.Sprintf("server: command body %T has no handler", cmd.Body))
	}
	var ap fsm.Applied
	if r := cmd.GetAuditRetention(); r != nil {
		ap = a.retain(kv, r) // signs the anchor with the audit key
	} else {
		ap, err = h(kv, m, cmd)
	}
	if err != nil {
		return applyResult{Err: err}
	}
	// One audit record per change; a batch of stores is one per store, in
	// the name of the store's caller.
	if ap.Batch == nil {
		a.record(kv, index, m.Time, cmd, &ap.Change)
	}
	for i := range ap.Batch {
		a.record(kv, index, m.Time, cmd, &ap.Batch[i])
	}
	rememberRequest(kv, cmd, index, m.Time)
	return applyResult{Revision: index, Value: ap.Value}
}

// retain removes audit records behind a signed anchor (retention); the
// removal is itself the next record.
func (a *applier) retain(kv raftstore.KV, r *raftv1.AuditRetention) fsm.Applied {
	anchor, n := audit.Remove(kv, a.auditKey, r.GetThroughSeq())
	if n == 0 {
		return fsm.Applied{}
	}
	return fsm.Applied{Change: fsm.Change{Changed: true, Action: "audit.retention", Target: "audit",
		After: map[string]any{"removed": n, "anchor_seq": anchor.Seq, "anchor_time": anchor.Time, "removed_total": anchor.Removed}}}
}

// record appends the audit record of a change (actor "" is the command's)
// and counts it.
func (a *applier) record(kv raftstore.KV, index uint64, at time.Time, cmd *raftv1.Command, c *fsm.Change) {
	if !c.Changed {
		return
	}
	actor, reason := c.Actor, c.Reason
	if actor == "" {
		actor = cmd.Actor
	}
	if reason == "" {
		reason = cmd.Reason
	}
	audit.Append(kv, a.auditKey, audit.Record{
		Revision: index, Time: at, Actor: actor, Reason: reason,
		Action: c.Action, Target: c.Target, Before: jsonText(c.Before), After: jsonText(c.After),
	})
	if a.metrics == nil {
		return
	}
	a.metrics.changes.WithLabelValues(c.Action).Inc()
	if r, ok := c.After.(canary.Rollout); ok {
		a.metrics.canaryApplied(c.Action, r)
	}
	if strings.HasPrefix(c.Action, "governance.") || c.Action == "circuit.kill_switch" {
		a.metrics.systemChanges.WithLabelValues(c.Action).Inc()
	}
	if after, ok := c.After.(circuit.Breaker); ok {
		if before, ok := c.Before.(circuit.Breaker); !ok || before.State != after.State {
			a.metrics.transitions.WithLabelValues(a.metrics.breakerLabels.label(after.Name), after.State.String(), after.Evidence.Trigger).Inc()
		}
	}
}

// handler applies one kind of command body to the state.
type handler func(kv fsm.KV, m fsm.Meta, cmd *raftv1.Command) (fsm.Applied, error)

// applied adapts a domain change function's answer to the dispatcher's.
func applied[R interface{ Applied() fsm.Applied }](r R, err error) (fsm.Applied, error) {
	if err != nil {
		return fsm.Applied{}, err
	}
	return r.Applied(), nil
}

// handlers is the dispatch table: the domain function for each command
// body. TestEveryCommandBodyHasAHandler keeps it complete.
var handlers = map[reflect.Type]handler{
	bodyType[raftv1.Command_EmergencyTrigger](): func(kv fsm.KV, m fsm.Meta, c *raftv1.Command) (fsm.Applied, error) {
		return applied(emergency.Trigger(kv, m, c.GetEmergencyTrigger()))
	},
	bodyType[raftv1.Command_EmergencyRelease](): func(kv fsm.KV, m fsm.Meta, c *raftv1.Command) (fsm.Applied, error) {
		return applied(emergency.Release(kv, m, c.GetEmergencyRelease()))
	},
	bodyType[raftv1.Command_EmergencyExpire](): func(kv fsm.KV, m fsm.Meta, c *raftv1.Command) (fsm.Applied, error) {
		return applied(emergency.Expire(kv, m, c.GetEmergencyExpire()))
	},
	bodyType[raftv1.Command_EmergencyStep](): func(kv fsm.KV, m fsm.Meta, c *raftv1.Command) (fsm.Applied, error) {
		return applied(emergency.Step(kv, m, c.GetEmergencyStep()))
	},
	bodyType[raftv1.Command_EmergencyConfig](): func(kv fsm.KV, m fsm.Meta, c *raftv1.Command) (fsm.Applied, error) {
		return applied(emergency.SetConfig(kv, m, c.GetEmergencyConfig()))
	},
	bodyType[raftv1.Command_MemberUpsert](): func(kv fsm.KV, _ fsm.Meta, c *raftv1.Command) (fsm.Applied, error) {
		return upsertMember(kv, c.GetMemberUpsert())
	},
	bodyType[raftv1.Command_MemberRemove](): func(kv fsm.KV, _ fsm.Meta, c *raftv1.Command) (fsm.Applied, error) {
		return removeMember(kv, c.GetMemberRemove())
	},
	bodyType[raftv1.Command_MemberPromotion](): func(kv fsm.KV, _ fsm.Meta, c *raftv1.Command) (fsm.Applied, error) {
		return setPromotion(kv, c.GetMemberPromotion())
	},
	bodyType[raftv1.Command_Circuit](): func(kv fsm.KV, m fsm.Meta, c *raftv1.Command) (fsm.Applied, error) {
		return applied(circuit.Apply(kv, m, c.GetCircuit()))
	},
	bodyType[raftv1.Command_Coordination](): func(kv fsm.KV, m fsm.Meta, c *raftv1.Command) (fsm.Applied, error) {
		return applied(coordination.Apply(kv, m, c.GetCoordination()))
	},
	bodyType[raftv1.Command_Dlq](): func(kv fsm.KV, m fsm.Meta, c *raftv1.Command) (fsm.Applied, error) {
		return applied(dlq.Apply(kv, m, c.GetDlq()))
	},
	bodyType[raftv1.Command_ConfigSet](): func(kv fsm.KV, m fsm.Meta, c *raftv1.Command) (fsm.Applied, error) {
		return applyConfigSet(kv, m, c.GetConfigSet(), "")
	},
	bodyType[raftv1.Command_Governance](): func(kv fsm.KV, m fsm.Meta, c *raftv1.Command) (fsm.Applied, error) {
		if c.GetGovernance().GetOp() >= raftv1.GovernanceCommand_APPROVAL_CREATE {
			return applied(governance.ApplyApproval(kv, m, c.GetGovernance()))
		}
		return applied(governance.Apply(kv, m, c.GetGovernance()))
	},
	bodyType[raftv1.Command_Idempotency](): func(kv fsm.KV, m fsm.Meta, c *raftv1.Command) (fsm.Applied, error) {
		return applied(idempotency.Apply(kv, m, c.GetIdempotency()))
	},
	bodyType[raftv1.Command_Notify](): func(kv fsm.KV, m fsm.Meta, c *raftv1.Command) (fsm.Applied, error) {
		return applied(notify.Apply(kv, m, c.GetNotify()))
	},
	bodyType[raftv1.Command_Canary](): func(kv fsm.KV, m fsm.Meta, c *raftv1.Command) (fsm.Applied, error) {
		return applyCanary(kv, m, c.GetCanary())
	},
	bodyType[raftv1.Command_AuditRetention](): nil, // applier.retain (it signs with the audit key)
	bodyType[raftv1.Command_Batch]():          nil, // applier.Apply: each command of the batch
	bodyType[raftv1.Command_AuditNote](): func(_ fsm.KV, _ fsm.Meta, c *raftv1.Command) (fsm.Applied, error) {
		n := c.GetAuditNote()
		return fsm.Applied{Change: fsm.Change{Changed: true, Action: n.GetAction(), Target: n.GetTarget(), After: n.GetDetail()}}, nil
	},
}

// bodyTypeOf is the dispatch key of cmd's body.
func bodyTypeOf(cmd *raftv1.Command) reflect.Type { return reflect.TypeOf(cmd.Body) }

// bodyType is the dynamic type of a Command body B (*B).
func bodyType[B any]() reflect.Type { return reflect.TypeFor[*B]() }

// errRequestIDReused is a request id sent again with a different write.
var errRequestIDReused = errors.New("server: request id reused")

// requestFingerprint identifies what a request id was used for: the
// caller, the reason and the body (not the leader's time), as every replica
// computes it from the same log entry.
func requestFingerprint(cmd *raftv1.Command) []byte {
	h := sha256.New()
	h.Write([]byte(cmd.Actor))
	h.Write([]byte{0})
	h.Write([]byte(cmd.Reason))
	h.Write([]byte{0})
	c := &raftv1.Command{Body: cmd.Body}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	h.Write(b)
	return h.Sum(nil)
}

// rememberRequest records a request id and forgets those older than the
// window, using the command's time so every replica prunes alike.
func rememberRequest(kv raftstore.KV, cmd *raftv1.Command, index uint64, now time.Time) {
	id := cmd.RequestId
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
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 8+sha256.Size), index)
	kv.Put(bucketRequests, []byte(id), append(v, requestFingerprint(cmd)...))
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
	// PromotionPending: a non-voter the leader promotes once caught up.
	PromotionPending bool `json:"promotion_pending,omitempty"`
}

func getMember(kv fsm.KV, id string) (memberRecord, bool) {
	v := kv.Get(bucketMembers, []byte(id))
	if v == nil {
		return memberRecord{}, false
	}
	m, err := members.Decode(id, v)
	if err != nil {
		return memberRecord{}, false
	}
	return m, true
}

// members holds the member table's decoded rows (read on every forwarded
// write by checkCommandVersion).
var members fsm.JSONCache[memberRecord]

func listMembers(kv fsm.KV) map[string]memberRecord {
	out := map[string]memberRecord{}
	kv.Scan(bucketMembers, nil, false, func(k, v []byte) bool {
		if m, err := members.Decode(string(k), v); err == nil {
			out[m.ID] = m
		}
		return true
	})
	return out
}

func upsertMember(kv fsm.KV, c *raftv1.MemberUpsert) (fsm.Applied, error) {
	next := memberRecord{ID: c.GetId(), RaftAddr: c.GetRaftAddr(), GRPCAddr: c.GetGrpcAddr(), HTTPAddr: c.GetHttpAddr(), CommandVersion: c.GetCommandVersion()}
	if next.ID == "" {
		return fsm.Applied{}, &fsm.ArgumentError{FieldName: "id", Code: "INVALID_ARGUMENT", Msg: "member id is required"}
	}
	before, ok := getMember(kv, next.ID)
	next.PromotionPending = before.PromotionPending // MemberPromotion's field
	if ok && before == next {
		return fsm.Applied{}, nil
	}
	kv.Put(bucketMembers, []byte(next.ID), []byte(jsonText(next)))
	var b any
	if ok {
		b = before
	}
	return fsm.Applied{Change: fsm.Change{Changed: true, Action: "cluster.member_upsert", Target: "member/" + next.ID, Before: b, After: next}}, nil
}

// setPromotion records or clears a pending promotion. The row may come
// before the node has published its addresses (MemberUpsert keeps the flag).
func setPromotion(kv fsm.KV, c *raftv1.MemberPromotion) (fsm.Applied, error) {
	if c.GetId() == "" {
		return fsm.Applied{}, &fsm.ArgumentError{FieldName: "id", Code: "INVALID_ARGUMENT", Msg: "member id is required"}
	}
	before, ok := getMember(kv, c.GetId())
	if before.PromotionPending == c.GetPending() {
		return fsm.Applied{}, nil
	}
	next := before
	next.ID, next.PromotionPending = c.GetId(), c.GetPending()
	kv.Put(bucketMembers, []byte(next.ID), []byte(jsonText(next)))
	var b any
	if ok {
		b = before
	}
	return fsm.Applied{Change: fsm.Change{Changed: true, Action: "cluster.member_promotion", Target: "member/" + next.ID, Before: b, After: next}}, nil
}

func removeMember(kv fsm.KV, c *raftv1.MemberRemove) (fsm.Applied, error) {
	before, ok := getMember(kv, c.GetId())
	if !ok {
		return fsm.Applied{}, nil
	}
	kv.Delete(bucketMembers, []byte(c.GetId()))
	return fsm.Applied{Change: fsm.Change{Changed: true, Action: "cluster.member_remove", Target: "member/" + c.GetId(), Before: before}}, nil
}
