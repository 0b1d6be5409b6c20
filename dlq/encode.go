package dlq

import (
	"slices"
	"strconv"

	"github.com/baldurhq/baldurd/internal/jsonw"
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
	b = jsonw.StringField(b, "id", e.ID, false)
	b = jsonw.StringField(b, "domain", e.Domain, false)
	b = jsonw.StringField(b, "failure_type", e.FailureType, false)
	b = jsonw.StringField(b, "status", string(e.Status), false)
	b = jsonw.StringField(b, "entity_type", e.EntityType, true)
	b = jsonw.StringField(b, "entity_id", e.EntityID, true)
	b = jsonw.StringField(b, "user_id", e.UserID, true)
	b = jsonw.StringField(b, "error_code", e.ErrorCode, true)
	b = jsonw.StringField(b, "error_message", e.ErrorMessage, true)
	for _, d := range [...]struct {
		name string
		raw  []byte
	}{{"request_data", e.RequestData}, {"snapshot_data", e.SnapshotData}, {"response_data", e.ResponseData}} {
		if len(d.raw) > 0 {
			b = jsonw.Key(b, d.name)
			b = append(b, d.raw...)
			b = append(b, ',')
		}
	}
	if len(e.Metadata) > 0 {
		b = jsonw.Key(b, "metadata")
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
			b = jsonw.String(b, k)
			b = append(b, ':')
			b = jsonw.String(b, e.Metadata[k])
		}
		b = append(b, '}', ',')
	}
	b = jsonw.IntField(b, "retry_count", int64(e.RetryCount))
	b = jsonw.IntField(b, "max_retries", int64(e.MaxRetries))
	b = jsonw.TimeField(b, "last_retry_at", e.LastRetryAt)
	b = jsonw.TimeField(b, "resolved_at", e.ResolvedAt)
	b = jsonw.StringField(b, "resolved_by", e.ResolvedBy, true)
	b = jsonw.StringField(b, "resolution_type", e.ResolutionType, true)
	b = jsonw.StringField(b, "resolution_note", e.ResolutionNote, true)
	b = jsonw.StringField(b, "next_action_hint", e.NextActionHint, true)
	b = jsonw.StringField(b, "recommended_action", e.RecommendedAct, true)
	b = jsonw.TimeField(b, "created_at", e.CreatedAt)
	b = jsonw.TimeField(b, "updated_at", e.UpdatedAt)
	b = jsonw.TimeField(b, "expires_at", e.ExpiresAt)
	if e.Truncated {
		b = append(b, `"truncated":true,`...)
	}
	b = jsonw.TimeField(b, "replay_lease_until", e.ReplayLeaseUntil)
	b = jsonw.StringField(b, "replay_worker", e.ReplayWorker, true)
	b = jsonw.StringField(b, "replay_origin", e.ReplayOrigin, true)
	b = append(b, `"revision":`...)
	b = strconv.AppendUint(b, e.Revision, 10)
	return append(b, '}')
}
