package dlq

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/baldurhq/baldurd/internal/fsm"
)

// Limits are the DLQ settings (BALDUR_DLQ_*): the startup flags until the
// runtime configuration's dlq section is set, its values from then on.
type Limits struct {
	MaxSize            int64    `json:"max_size"`
	MaxPerDomain       int64    `json:"max_size_per_domain"`
	OverflowStrategy   string   `json:"overflow_strategy"` // drop_oldest or reject
	RequestDataMax     int      `json:"request_data_max_bytes"`
	FieldMax           int      `json:"field_max_bytes"`
	TruncateBlocks     bool     `json:"truncate_blocks_replay"`
	MaxReplayAttempts  int      `json:"max_replay_attempts"`
	SensitiveFields    []string `json:"sensitive_fields"`
	ExpiryHours        int      `json:"expiry_hours"`
	RetentionDays      int      `json:"retention_days"`
	StaleReplayMinutes int      `json:"stale_replay_minutes"`
	// MaxDomains bounds the domains holding entries; MaxMetadataKeys the
	// metadata keys of one entry.
	MaxDomains      int `json:"max_domains"`
	MaxMetadataKeys int `json:"max_metadata_keys"`
}

// Validate checks l and names the first setting at fault (FieldName is
// the setting's JSON name).
func (l Limits) Validate() error {
	bad := func(field, msg string) error {
		return &fsm.ArgumentError{Domain: "dlq", FieldName: field, Code: "INVALID_CONFIG", Msg: msg}
	}
	switch {
	case l.MaxSize < 1000 || l.MaxSize > 10_000_000:
		return bad("max_size", fmt.Sprintf("%d: use 1000..10000000", l.MaxSize))
	case l.MaxPerDomain < 100 || l.MaxPerDomain > 1_000_000:
		return bad("max_size_per_domain", fmt.Sprintf("%d: use 100..1000000", l.MaxPerDomain))
	case l.OverflowStrategy != "drop_oldest" && l.OverflowStrategy != "reject":
		return bad("overflow_strategy", fmt.Sprintf("%q: use drop_oldest or reject", l.OverflowStrategy))
	case l.ExpiryHours < 1 || l.ExpiryHours > 720:
		return bad("expiry_hours", fmt.Sprintf("%d: use 1..720", l.ExpiryHours))
	case l.RetentionDays < 1 || l.RetentionDays > 365:
		return bad("retention_days", fmt.Sprintf("%d: use 1..365", l.RetentionDays))
	case l.MaxReplayAttempts < 1 || l.MaxReplayAttempts > 100:
		return bad("max_replay_attempts", fmt.Sprintf("%d: use 1..100", l.MaxReplayAttempts))
	case l.RequestDataMax < 256 || l.RequestDataMax > 256<<10:
		return bad("request_data_max_bytes", fmt.Sprintf("%d: use 256..262144", l.RequestDataMax))
	case l.FieldMax < 256 || l.FieldMax > 256<<10:
		return bad("field_max_bytes", fmt.Sprintf("%d: use 256..262144", l.FieldMax))
	case l.MaxDomains < 1 || l.MaxDomains > 100_000:
		return bad("max_domains", fmt.Sprintf("%d: use 1..100000", l.MaxDomains))
	case l.MaxMetadataKeys < 1 || l.MaxMetadataKeys > 1000:
		return bad("max_metadata_keys", fmt.Sprintf("%d: use 1..1000", l.MaxMetadataKeys))
	case l.StaleReplayMinutes < 5 || l.StaleReplayMinutes > 1440:
		return bad("stale_replay_minutes", fmt.Sprintf("%d: use 5..1440", l.StaleReplayMinutes))
	case len(l.SensitiveFields) > 100:
		return bad("sensitive_fields", fmt.Sprintf("has %d names: at most 100", len(l.SensitiveFields)))
	}
	for i, f := range l.SensitiveFields {
		if f == "" || len(f) > MaxShortField {
			return bad(fmt.Sprintf("sensitive_fields[%d]", i), fmt.Sprintf("must be 1..%d bytes", MaxShortField))
		}
	}
	return nil
}

// Field bounds of an entry (refused beyond, naming the field).
const (
	MaxShortField    = 256  // entity_type, entity_id, user_id, error_code, next_action_hint, recommended_action, metadata keys
	MaxMetadataValue = 1024 // one metadata value
)

// DefaultLimits are Baldur's defaults (§4.3).
func DefaultLimits() Limits {
	return Limits{
		MaxSize: 100000, MaxPerDomain: 20000, OverflowStrategy: "drop_oldest",
		RequestDataMax: 4096, FieldMax: 4096, TruncateBlocks: true, MaxReplayAttempts: 2,
		SensitiveFields: []string{"password", "passwd", "secret", "token", "api_key", "apikey", "authorization", "card_number", "cvv", "ssn"},
		ExpiryHours:     72, RetentionDays: 30, StaleReplayMinutes: 30,
		MaxDomains: 1000, MaxMetadataKeys: 64,
	}
}

const maskValue = "***"

// mask replaces the values of sensitive keys (case-insensitive, at any
// depth) in a JSON document. A compact document (as encoding/json writes
// it) without such keys is returned as it is; any other is validated and
// compacted.
func mask(raw json.RawMessage, sensitive map[string]bool, compact bool) (json.RawMessage, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	if !mayHoldKey(raw, sensitive) {
		if compact {
			return raw, nil
		}
		var out bytes.Buffer
		if err := json.Compact(&out, raw); err != nil {
			return nil, err
		}
		return out.Bytes(), nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	var walk func(any) any
	walk = func(x any) any {
		switch t := x.(type) {
		case map[string]any:
			for k, val := range t {
				if sensitive[strings.ToLower(k)] {
					t[k] = maskValue
				} else {
					t[k] = walk(val)
				}
			}
		case []any:
			for i := range t {
				t[i] = walk(t[i])
			}
		}
		return x
	}
	out, err := json.Marshal(walk(v))
	return out, err
}

// mayHoldKey reports whether raw might have a key in sensitive: false only
// when no JSON string in it, lower-cased, is a sensitive name, and there are
// no escapes or non-ASCII letters that could spell one. It spares decoding
// and re-encoding the common document that has nothing to mask, and reads
// the document once without copying it.
func mayHoldKey(raw []byte, sensitive map[string]bool) bool {
	if len(sensitive) == 0 {
		return false
	}
	if bytes.IndexByte(raw, '\\') >= 0 {
		return true
	}
	longest := 0
	for name := range sensitive {
		longest = max(longest, len(name))
	}
	var buf [64]byte
	for i := 0; ; {
		q := bytes.IndexByte(raw[i:], '"')
		if q < 0 {
			return false
		}
		start := i + q + 1
		n := bytes.IndexByte(raw[start:], '"')
		if n < 0 {
			return false
		}
		if n <= longest && n <= len(buf) {
			tok := buf[:n]
			for j := range n {
				c := raw[start+j]
				switch {
				case c >= 0x80:
					return true // leave Unicode case folding to the full check
				case c >= 'A' && c <= 'Z':
					c += 'a' - 'A'
				}
				tok[j] = c
			}
			if sensitive[string(tok)] {
				return true
			}
		}
		i = start + n + 1
	}
}

// truncate replaces a document larger than max with Baldur's marker.
func truncate(raw json.RawMessage, max int) (json.RawMessage, bool) {
	if max <= 0 || len(raw) <= max {
		return raw, false
	}
	preview := string(raw[:min(200, len(raw))])
	for !utf8.ValidString(preview) {
		preview = preview[:len(preview)-1]
	}
	return marshal(map[string]any{"_truncated": true, "original_size": len(raw), "preview": preview}), true
}

// Prepare validates and normalizes an entry for storing: id, domain (an
// invalid one goes to OTHER_DOMAIN with the original kept in metadata),
// masking of sensitive fields, then size caps. Oversize payloads are
// truncated, never refused. The documents are validated and compacted.
func Prepare(e Entry, l Limits) (Entry, error) { return prepare(e, l, false) }

// PrepareCompact is Prepare for documents that encoding/json wrote (valid
// and compact), as the server's conversion from protobuf Structs does; it
// spares scanning them again.
func PrepareCompact(e Entry, l Limits) (Entry, error) { return prepare(e, l, true) }

func prepare(e Entry, l Limits, compact bool) (Entry, error) {
	if err := CheckID(e.ID); err != nil {
		return Entry{}, err
	}
	if strings.TrimSpace(e.FailureType) == "" {
		return Entry{}, &fsm.ArgumentError{Domain: "dlq", FieldName: "failure_type", Code: "INVALID_ARGUMENT", Msg: "is required"}
	}
	if len(e.FailureType) > 128 {
		return Entry{}, &fsm.ArgumentError{Domain: "dlq", FieldName: "failure_type", Code: "INVALID_ARGUMENT", Msg: "at most 128 bytes"}
	}
	for _, f := range []struct{ name, v string }{{"entity_type", e.EntityType}, {"entity_id", e.EntityID}, {"user_id", e.UserID},
		{"error_code", e.ErrorCode}, {"next_action_hint", e.NextActionHint}, {"recommended_action", e.RecommendedAct}} {
		if len(f.v) > MaxShortField {
			return Entry{}, &fsm.ArgumentError{Domain: "dlq", FieldName: f.name, Code: "INVALID_ARGUMENT", Msg: fmt.Sprintf("%d bytes, at most %d", len(f.v), MaxShortField)}
		}
	}
	if l.MaxMetadataKeys > 0 && len(e.Metadata) > l.MaxMetadataKeys {
		return Entry{}, &fsm.ArgumentError{Domain: "dlq", FieldName: "metadata", Code: "INVALID_ARGUMENT", Msg: fmt.Sprintf("%d keys, at most %d (--dlq-max-metadata-keys)", len(e.Metadata), l.MaxMetadataKeys)}
	}
	for k, v := range e.Metadata {
		if len(k) > MaxShortField || len(v) > MaxMetadataValue {
			return Entry{}, &fsm.ArgumentError{Domain: "dlq", FieldName: "metadata", Code: "INVALID_ARGUMENT",
				Msg: fmt.Sprintf("key %.40q…: keys at most %d bytes, values at most %d", k, MaxShortField, MaxMetadataValue)}
		}
	}
	domain, original, reason := NormalizeDomain(e.Domain)
	if original != "" {
		if e.Metadata == nil {
			e.Metadata = map[string]string{}
		}
		e.Metadata["original_domain"] = truncString(original, 200)
		e.Metadata["domain_reject_reason"] = reason
	}
	e.Domain = domain
	sensitive := map[string]bool{}
	for _, f := range l.SensitiveFields {
		sensitive[strings.ToLower(f)] = true
	}
	for _, f := range []struct {
		name string
		v    *json.RawMessage
		max  int
	}{{"request_data", &e.RequestData, l.RequestDataMax}, {"snapshot_data", &e.SnapshotData, l.FieldMax}, {"response_data", &e.ResponseData, l.FieldMax}} {
		masked, err := mask(*f.v, sensitive, compact)
		if err != nil {
			return Entry{}, &fsm.ArgumentError{Domain: "dlq", FieldName: f.name, Code: "INVALID_ARGUMENT", Msg: fmt.Sprintf("not JSON: %v", err)}
		}
		var cut bool
		*f.v, cut = truncate(masked, f.max)
		if cut && f.name == "request_data" {
			e.Truncated = true
		}
	}
	for k := range e.Metadata {
		if sensitive[strings.ToLower(k)] {
			e.Metadata[k] = maskValue
		}
	}
	e.ErrorMessage = truncString(e.ErrorMessage, MaxErrorMessage)
	return e, nil
}

func truncString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// DomainLimitError refuses a store that would start domain when domains
// already hold entries and MaxDomains allows no more (both stores).
func (l Limits) DomainLimitError(domain string, domains int) error {
	return fmt.Errorf("%w: domain %q would be domain %d; at most %d hold entries (max_domains of the dlq config section, --dlq-max-domains)", ErrCapacityExceeded, domain, domains+1, l.MaxDomains)
}
