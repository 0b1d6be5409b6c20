package notify

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/internal/fsm"
)

// Categories of events.
var Categories = []string{"circuit", "emergency", "dlq", "canary", "governance", "cluster", "audit"}

// Priorities, lowest first.
var Priorities = []string{"low", "medium", "high", "critical"}

// PriorityRank orders priorities (-1 for an unknown one).
func PriorityRank(p string) int { return slices.Index(Priorities, p) }

// Channel types.
const (
	Webhook = "webhook"
	Slack   = "slack"
	Log     = "log"
)

// Channel is where notifications go. URL and Secret are never returned by
// the API nor logged (only the URL's host).
type Channel struct {
	Name        string    `json:"name"`
	Type        string    `json:"type"`
	URL         string    `json:"url,omitempty"`
	Secret      string    `json:"secret,omitempty"`
	Categories  []string  `json:"categories,omitempty"`
	MinPriority string    `json:"min_priority"`
	Revision    uint64    `json:"revision"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Host is the channel URL's host, what may be shown.
func (c Channel) Host() string {
	u, err := url.Parse(c.URL)
	if err != nil {
		return ""
	}
	return u.Host
}

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

func invalid(field, msg string) error {
	return &fsm.ArgumentError{Domain: "notify", FieldName: field, Code: "INVALID_CHANNEL", Msg: msg}
}

// Validate checks a channel and names the field at fault (never quoting
// the URL or the secret).
func (c Channel) Validate() error {
	if !namePattern.MatchString(c.Name) {
		return invalid("name", fmt.Sprintf("%q: use [a-z0-9][a-z0-9._-]{0,62}", c.Name))
	}
	switch c.Type {
	case Webhook, Slack:
		u, err := url.Parse(c.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return invalid("url", "must be an absolute http or https URL")
		}
		if len(c.URL) > 2048 {
			return invalid("url", "is longer than 2048 bytes")
		}
	case Log:
		if c.URL != "" {
			return invalid("url", "a log channel has none")
		}
	default:
		return invalid("type", fmt.Sprintf("%q: use webhook, slack or log", c.Type))
	}
	if c.Type == Webhook && len(c.Secret) < 16 {
		return invalid("secret", "a webhook needs a signing secret of at least 16 bytes")
	}
	if len(c.Secret) > 256 {
		return invalid("secret", "is longer than 256 bytes")
	}
	for i, cat := range c.Categories {
		if !slices.Contains(Categories, cat) {
			return invalid(fmt.Sprintf("categories[%d]", i), fmt.Sprintf("%q: use %s", cat, strings.Join(Categories, ", ")))
		}
	}
	if PriorityRank(c.MinPriority) < 0 {
		return invalid("min_priority", fmt.Sprintf("%q: use %s", c.MinPriority, strings.Join(Priorities, ", ")))
	}
	return nil
}

// Buckets.
var (
	BucketChannels   = []byte("notify_channels")    // name → Channel JSON
	BucketClaims     = []byte("notify_claims")      // dedup key → Claim JSON
	BucketDeliveries = []byte("notify_deliveries")  // seq (8 bytes BE) → Delivery JSON
	BucketMeta       = []byte("notify_meta")        // "cursor" → audit seq; "seq" → delivery seq
	BucketClaimTimes = []byte("notify_claim_times") // until (8 bytes BE unix nanos) + dedup key → nil
	keyCursor        = []byte("cursor")
	keySeq           = []byte("seq")
)

// Buckets lists this domain's buckets.
func Buckets() [][]byte {
	return [][]byte{BucketChannels, BucketClaims, BucketDeliveries, BucketMeta, BucketClaimTimes}
}

// MaxChannels bounds the channels a cluster keeps.
const MaxChannels = 100

// claimSweep bounds the expired claims one claim removes.
const claimSweep = 16

func claimTimeKey(until time.Time, key string) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(until.UnixNano())), key...)
}

// Channels returns every channel, by name.
func Channels(kv fsm.KV) []Channel {
	var out []Channel
	kv.Scan(BucketChannels, nil, false, func(_, v []byte) bool {
		var c Channel
		if err := json.Unmarshal(v, &c); err != nil {
			panic(fmt.Sprintf("notify: decode channel: %v", err))
		}
		out = append(out, c)
		return true
	})
	return out
}

// Cursor is the last audit record whose event was handled.
func Cursor(kv fsm.KV) uint64 {
	if v := kv.Get(BucketMeta, keyCursor); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// Claim is an event claimed for sending under its dedup key: until Until
// another event with the key is suppressed (the episode's cooldown).
type Claim struct {
	Key   string    `json:"key"`
	Until time.Time `json:"until"`
	Seq   uint64    `json:"seq"`
}

// Delivery is what became of one event on one channel.
type Delivery struct {
	Seq      uint64    `json:"seq"`
	Channel  string    `json:"channel"`
	Event    Event     `json:"event"`
	Result   string    `json:"result"` // sent, failed, suppressed
	Attempts int       `json:"attempts"`
	Error    string    `json:"error,omitempty"`
	Time     time.Time `json:"time"`
}

// MaxDeliveries is how many delivery records are kept.
const MaxDeliveries = 500

// Deliveries returns up to limit delivery records, newest first.
func Deliveries(kv fsm.KV, limit int) []Delivery {
	var out []Delivery
	kv.Scan(BucketDeliveries, nil, true, func(_, v []byte) bool {
		var d Delivery
		if err := json.Unmarshal(v, &d); err != nil {
			panic(fmt.Sprintf("notify: decode delivery: %v", err))
		}
		out = append(out, d)
		return len(out) < limit
	})
	return out
}

// Result is what a notify command did.
type Result struct {
	fsm.Change
	// Claimed: the event may be sent (CLAIM); false when its dedup key is
	// cooling down.
	Claimed bool
	Channel Channel
}

// Applied is r in the dispatcher's vocabulary (claims and delivery
// records are not audited: they are the audit trail's own consequences).
func (r Result) Applied() fsm.Applied { return fsm.Applied{Change: r.Change, Value: r} }

// ErrChannelNotFound is a channel that does not exist.
var ErrChannelNotFound = errors.New("notify: channel not found")

// Apply applies one notify command.
func Apply(kv fsm.KV, m fsm.Meta, c *raftv1.NotifyCommand) (Result, error) {
	switch c.GetOp() {
	case raftv1.NotifyCommand_PUT_CHANNEL:
		var ch Channel
		if err := json.Unmarshal(c.GetChannelJson(), &ch); err != nil {
			return Result{}, invalid("channel", "is not a channel")
		}
		if err := ch.Validate(); err != nil {
			return Result{}, err
		}
		if kv.Get(BucketChannels, []byte(ch.Name)) == nil && len(Channels(kv)) >= MaxChannels {
			return Result{}, invalid("name", fmt.Sprintf("the cluster has %d channels, as many as it keeps", MaxChannels))
		}
		ch.Revision, ch.UpdatedAt = m.Index, m.Time
		b, _ := json.Marshal(ch)
		kv.Put(BucketChannels, []byte(ch.Name), b)
		return Result{Change: fsm.Change{Changed: true, Action: "notify.channel_set", Target: "channel/" + ch.Name,
			After: map[string]any{"type": ch.Type, "host": ch.Host(), "categories": ch.Categories, "min_priority": ch.MinPriority}}, Channel: ch}, nil
	case raftv1.NotifyCommand_DELETE_CHANNEL:
		if kv.Get(BucketChannels, []byte(c.GetName())) == nil {
			return Result{}, fmt.Errorf("%w: %q", ErrChannelNotFound, c.GetName())
		}
		kv.Delete(BucketChannels, []byte(c.GetName()))
		return Result{Change: fsm.Change{Changed: true, Action: "notify.channel_deleted", Target: "channel/" + c.GetName()}}, nil
	case raftv1.NotifyCommand_CLAIM:
		// The cursor moves past the audit record whatever the answer.
		if seq := c.GetAuditSeq(); seq > Cursor(kv) {
			kv.Put(BucketMeta, keyCursor, binary.BigEndian.AppendUint64(nil, seq))
		}
		if c.GetDedupKey() == "" {
			return Result{}, nil
		}
		// Claims whose cooldown ended are forgotten, a few per claim, so
		// the claims kept are those of the last cooldown.
		var gone [][]byte
		kv.Scan(BucketClaimTimes, nil, false, func(k, _ []byte) bool {
			if len(k) < 8 || int64(binary.BigEndian.Uint64(k[:8])) > m.Time.UnixNano() || len(gone) >= claimSweep {
				return false
			}
			gone = append(gone, append([]byte{}, k...))
			return true
		})
		for _, k := range gone {
			kv.Delete(BucketClaimTimes, k)
			if v := kv.Get(BucketClaims, k[8:]); v != nil {
				var cl Claim
				if json.Unmarshal(v, &cl) == nil && !m.Time.Before(cl.Until) {
					kv.Delete(BucketClaims, k[8:])
				}
			}
		}
		if v := kv.Get(BucketClaims, []byte(c.GetDedupKey())); v != nil {
			var cl Claim
			if json.Unmarshal(v, &cl) == nil && m.Time.Before(cl.Until) {
				return Result{}, nil // cooling down: suppressed
			}
		}
		cl := Claim{Key: c.GetDedupKey(), Until: m.Time.Add(time.Duration(c.GetCooldownNanos())), Seq: c.GetAuditSeq()}
		b, _ := json.Marshal(cl)
		kv.Put(BucketClaims, []byte(cl.Key), b)
		kv.Put(BucketClaimTimes, claimTimeKey(cl.Until, cl.Key), nil)
		return Result{Claimed: true}, nil
	case raftv1.NotifyCommand_RECORD:
		var d Delivery
		if err := json.Unmarshal(c.GetDeliveryJson(), &d); err != nil {
			return Result{}, invalid("delivery", "is not a delivery record")
		}
		var seq uint64
		if v := kv.Get(BucketMeta, keySeq); len(v) == 8 {
			seq = binary.BigEndian.Uint64(v)
		}
		seq++
		d.Seq, d.Time = seq, m.Time
		b, _ := json.Marshal(d)
		kv.Put(BucketMeta, keySeq, binary.BigEndian.AppendUint64(nil, seq))
		kv.Put(BucketDeliveries, binary.BigEndian.AppendUint64(nil, seq), b)
		if seq > MaxDeliveries {
			kv.Delete(BucketDeliveries, binary.BigEndian.AppendUint64(nil, seq-MaxDeliveries))
		}
		return Result{}, nil
	}
	return Result{}, invalid("op", fmt.Sprintf("unknown notify op %v", c.GetOp()))
}
