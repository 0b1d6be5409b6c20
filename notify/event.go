package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Event is one thing people are told about.
type Event struct {
	Category string    `json:"category"`
	Priority string    `json:"priority"`
	Title    string    `json:"title"`
	Message  string    `json:"message"`
	Action   string    `json:"action"`
	Target   string    `json:"target"`
	Actor    string    `json:"actor,omitempty"`
	DedupKey string    `json:"dedup_key"`
	Time     time.Time `json:"time"`
	AuditSeq uint64    `json:"audit_seq,omitempty"`
}

// rule maps an audit action to an event.
type rule struct {
	category, priority string
	title              string // %s: the target's name
	episode            string // dedup key suffix: one message per episode
}

// rules are the audit actions that are events.
var rules = map[string]rule{
	"circuit.open":                   {"circuit", "high", "Breaker %s is OPEN", "state"},
	"circuit.close":                  {"circuit", "medium", "Breaker %s is CLOSED again", "state"},
	"circuit.force_open":             {"circuit", "high", "Breaker %s forced OPEN", "forced"},
	"circuit.force_close":            {"circuit", "medium", "Breaker %s forced CLOSED", "forced"},
	"emergency.trigger":              {"emergency", "critical", "Emergency %s", "level"},
	"emergency.auto_trigger":         {"emergency", "critical", "Automatic emergency %s", "level"},
	"emergency.recovery_step":        {"emergency", "medium", "Emergency %s steps down", "level"},
	"emergency.release":              {"emergency", "high", "Emergency %s released", "level"},
	"emergency.force_release":        {"emergency", "high", "Emergency %s force-released", "level"},
	"emergency.expire":               {"emergency", "medium", "Emergency %s expired", "level"},
	"canary.promote":                 {"canary", "low", "Rollout %s promoted", "stage"},
	"canary.complete":                {"canary", "medium", "Rollout %s completed", "end"},
	"canary.rollback":                {"canary", "high", "Rollout %s rolled back", "end"},
	"canary.pause":                   {"canary", "medium", "Rollout %s paused", "stage"},
	"canary.stuck":                   {"canary", "high", "Rollout %s is stuck", "stuck"},
	"governance.blocked":             {"governance", "medium", "Gate refused %s", "blocked"},
	"governance.approval_requested":  {"governance", "medium", "Approval requested: %s", "approval"},
	"governance.approval_approved":   {"governance", "medium", "Approval granted: %s", "decision"},
	"governance.approval_rejected":   {"governance", "medium", "Approval rejected: %s", "decision"},
	"governance.break_glass":         {"governance", "critical", "Break glass engaged (%s)", "glass"},
	"governance.break_glass_used":    {"governance", "high", "Break glass used for %s", "glass-use"},
	"governance.strict_warning":      {"governance", "medium", "STRICT mode still on (%s)", "strict"},
	"circuit.kill_switch":            {"governance", "critical", "Kill switch changed (%s)", "kill"},
	"cluster.member_removed":         {"cluster", "high", "Member %s removed", "member"},
	"dlq.replay_blocked":             {"dlq", "medium", "Replay paused for %s", "pause"},
	"governance.approval_executed":   {"governance", "low", "Approved change carried out: %s", "done"},
	"governance.approval_failed":     {"governance", "high", "Approved change failed: %s", "done"},
	"governance.break_glass_ended":   {"governance", "medium", "Break glass ended (%s)", "glass"},
	"governance.strict":              {"governance", "medium", "STRICT mode on (%s)", "strict"},
	"governance.dry_run":             {"governance", "high", "Dry run on (%s)", "dryrun"},
	"governance.live":                {"governance", "medium", "Dry run off (%s)", "dryrun"},
	"governance.approval_expired":    {"governance", "low", "Approval expired: %s", "decision"},
	"canary.start":                   {"canary", "low", "Rollout %s started", "start"},
	"emergency.recovery_start":       {"emergency", "medium", "Emergency %s recovering", "level"},
	"governance.strict_expired":      {"governance", "medium", "STRICT mode ended (%s)", "strict"},
	"cluster.member_added":           {"cluster", "medium", "Member %s added", "member"},
	"cluster.leader_elected":         {"cluster", "medium", "Member %s leads", "leader"},
	"cluster.member_unreachable":     {"cluster", "high", "Member %s unreachable", "unreachable"},
	"cluster.member_reachable":       {"cluster", "medium", "Member %s reachable again", "reachable"},
	"audit.verify_failed":            {"audit", "critical", "Audit trail verification failed (%s)", "verify"},
	"dlq.threshold_exceeded":         {"dlq", "high", "DLQ %s over its PENDING threshold", "threshold"},
	"dlq.replay_lease_expired":       {"dlq", "high", "DLQ entry %s stuck in REPLAYING (lease expired)", "stuck"},
	"cluster.leadership_transferred": {"cluster", "medium", "Leadership transferred (%s)", "leader"},
}

// name is the last part of an audit target ("circuit/payments": payments).
func name(target string) string {
	if i := strings.LastIndexByte(target, '/'); i >= 0 {
		return target[i+1:]
	}
	return target
}

// Classify is the event an audit record gives (ok false for none). The
// dedup key groups the records of one episode: a flapping breaker's trips
// share "circuit/payments/state", so a cooldown lets one message through.
func Classify(seq uint64, action, target, actor, reason string, at time.Time) (Event, bool) {
	r, ok := rules[action]
	if !ok {
		return Event{}, false
	}
	title := fmt.Sprintf(r.title, name(target))
	msg := title
	if reason != "" {
		msg += ": " + reason
	}
	if actor != "" {
		msg += " (by " + actor + ")"
	}
	return Event{Category: r.category, Priority: r.priority, Title: title, Message: msg, Action: action, Target: target, Actor: actor,
		DedupKey: target + "/" + r.episode, Time: at, AuditSeq: seq}, true
}

// Escalate raises an event's priority one step while an emergency of
// LEVEL_2 or above is active (§14: people on call hear more, sooner).
func Escalate(e Event, level int) Event {
	if level >= 2 {
		if i := PriorityRank(e.Priority); i >= 0 && i < len(Priorities)-1 {
			e.Priority = Priorities[i+1]
		}
	}
	return e
}

// Route returns the channels an event goes to: its category among the
// channel's (all when it names none) and its priority at least the
// channel's minimum.
func Route(channels []Channel, e Event) []Channel {
	var out []Channel
	for _, c := range channels {
		if len(c.Categories) > 0 && !slices.Contains(c.Categories, e.Category) {
			continue
		}
		if PriorityRank(e.Priority) < PriorityRank(c.MinPriority) {
			continue
		}
		out = append(out, c)
	}
	return out
}

// Envelope is the generic webhook's body.
type Envelope struct {
	ID       string    `json:"id"`
	Source   string    `json:"source"`
	Category string    `json:"category"`
	Priority string    `json:"priority"`
	Title    string    `json:"title"`
	Message  string    `json:"message"`
	Action   string    `json:"action"`
	Target   string    `json:"target"`
	Actor    string    `json:"actor,omitempty"`
	DedupKey string    `json:"dedup_key"`
	Time     time.Time `json:"time"`
}

// Body is what a channel is sent for an event: the envelope (webhook) or a
// Slack message.
func Body(c Channel, e Event, cluster string) []byte {
	if c.Type == Slack {
		b, _ := json.Marshal(map[string]any{
			"text": fmt.Sprintf("[%s] %s", strings.ToUpper(e.Priority), e.Title),
			"blocks": []any{
				map[string]any{"type": "section", "text": map[string]string{"type": "mrkdwn", "text": fmt.Sprintf("*[%s] %s*\n%s", strings.ToUpper(e.Priority), e.Title, e.Message)}},
				map[string]any{"type": "context", "elements": []any{map[string]string{"type": "mrkdwn", "text": fmt.Sprintf("%s · %s · %s", cluster, e.Category, e.Time.UTC().Format(time.RFC3339))}}},
			},
		})
		return b
	}
	b, _ := json.Marshal(Envelope{ID: fmt.Sprintf("%s-%d", cluster, e.AuditSeq), Source: cluster, Category: e.Category, Priority: e.Priority,
		Title: e.Title, Message: e.Message, Action: e.Action, Target: e.Target, Actor: e.Actor, DedupKey: e.DedupKey, Time: e.Time})
	return b
}

// Signature is the webhook body's signature header value:
// "sha256=" + hex(HMAC-SHA256(secret, timestamp + "." + body)).
func Signature(secret string, timestamp int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(m, "%d.", timestamp)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}
