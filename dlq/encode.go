package dlq

import (
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// encodeEntry writes e as JSON: the document json.Marshal(e) would give
// (same fields, same omissions; TestEncodeEntryMatchesEncodingJSON), with
// the three documents copied in as they are instead of re-validated and
// compacted (they are valid JSON: Prepare checked them, or json.Unmarshal
// did when they were read back), and without reflection: the leader encodes
// every stored entry. "revision" comes last, as StoreCommand relies on.
func encodeEntry(e Entry) []byte {
	b := make([]byte, 0, 512+len(e.RequestData)+len(e.SnapshotData)+len(e.ResponseData)+len(e.ErrorMessage))
	b = append(b, '{')
	b = appendStringField(b, "id", e.ID, false)
	b = appendStringField(b, "domain", e.Domain, false)
	b = appendStringField(b, "failure_type", e.FailureType, false)
	b = appendStringField(b, "status", string(e.Status), false)
	b = appendStringField(b, "entity_type", e.EntityType, true)
	b = appendStringField(b, "entity_id", e.EntityID, true)
	b = appendStringField(b, "user_id", e.UserID, true)
	b = appendStringField(b, "error_code", e.ErrorCode, true)
	b = appendStringField(b, "error_message", e.ErrorMessage, true)
	for _, d := range [...]struct {
		name string
		raw  []byte
	}{{"request_data", e.RequestData}, {"snapshot_data", e.SnapshotData}, {"response_data", e.ResponseData}} {
		if len(d.raw) > 0 {
			b = appendKey(b, d.name)
			b = append(b, d.raw...)
			b = append(b, ',')
		}
	}
	if len(e.Metadata) > 0 {
		b = appendKey(b, "metadata")
		b = append(b, '{')
		keys := make([]string, 0, len(e.Metadata))
		for k := range e.Metadata {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendString(b, e.Metadata[k])
		}
		b = append(b, '}', ',')
	}
	b = appendIntField(b, "retry_count", int64(e.RetryCount))
	b = appendIntField(b, "max_retries", int64(e.MaxRetries))
	b = appendTimeField(b, "last_retry_at", e.LastRetryAt)
	b = appendTimeField(b, "resolved_at", e.ResolvedAt)
	b = appendStringField(b, "resolved_by", e.ResolvedBy, true)
	b = appendStringField(b, "resolution_type", e.ResolutionType, true)
	b = appendStringField(b, "resolution_note", e.ResolutionNote, true)
	b = appendStringField(b, "next_action_hint", e.NextActionHint, true)
	b = appendStringField(b, "recommended_action", e.RecommendedAct, true)
	b = appendTimeField(b, "created_at", e.CreatedAt)
	b = appendTimeField(b, "updated_at", e.UpdatedAt)
	b = appendTimeField(b, "expires_at", e.ExpiresAt)
	if e.Truncated {
		b = append(b, `"truncated":true,`...)
	}
	b = appendTimeField(b, "replay_lease_until", e.ReplayLeaseUntil)
	b = appendStringField(b, "replay_worker", e.ReplayWorker, true)
	b = append(b, `"revision":`...)
	b = strconv.AppendUint(b, e.Revision, 10)
	return append(b, '}')
}

func appendKey(b []byte, name string) []byte {
	b = append(b, '"')
	b = append(b, name...)
	return append(b, '"', ':')
}

func appendStringField(b []byte, name, v string, omitEmpty bool) []byte {
	if omitEmpty && v == "" {
		return b
	}
	return append(appendString(appendKey(b, name), v), ',')
}

func appendIntField(b []byte, name string, v int64) []byte {
	return append(strconv.AppendInt(appendKey(b, name), v, 10), ',')
}

func appendTimeField(b []byte, name string, t time.Time) []byte {
	b = append(appendKey(b, name), '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"', ',')
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string, escaping as encoding/json does:
// quote, backslash and control characters; <, > and & as \u003c, \u003e
// and \u0026; U+2028 and U+2029; invalid UTF-8 as U+FFFD.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
