package dlq

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/baldurhq/baldurd/internal/fsm"
)

// Status is an entry's lifecycle status (Baldur §4.1).
type Status string

// Statuses.
const (
	Pending           Status = "PENDING"
	Replaying         Status = "REPLAYING"
	Reviewing         Status = "REVIEWING"
	Replayed          Status = "REPLAYED"
	RequiresReview    Status = "REQUIRES_REVIEW"
	Resolved          Status = "RESOLVED"
	Rejected          Status = "REJECTED"
	Archived          Status = "ARCHIVED"
	Expired           Status = "EXPIRED"
	PermanentlyFailed Status = "PERMANENTLY_FAILED"
)

// Statuses lists every status.
var Statuses = []Status{Pending, Replaying, Reviewing, Replayed, RequiresReview, Resolved, Rejected, Archived, Expired, PermanentlyFailed}

// ParseStatus accepts any case.
func ParseStatus(s string) (Status, error) {
	for _, st := range Statuses {
		if strings.EqualFold(s, string(st)) {
			return st, nil
		}
	}
	return "", &fsm.ArgumentError{Domain: "dlq", FieldName: "status", Code: "INVALID_STATUS", Msg: fmt.Sprintf("unknown status %q", s)}
}

// Entry is one failed operation (Baldur's FailedOperationData).
type Entry struct {
	ID               string            `json:"id"`
	Domain           string            `json:"domain"`
	FailureType      string            `json:"failure_type"`
	Status           Status            `json:"status"`
	EntityType       string            `json:"entity_type,omitempty"`
	EntityID         string            `json:"entity_id,omitempty"`
	UserID           string            `json:"user_id,omitempty"`
	ErrorCode        string            `json:"error_code,omitempty"`
	ErrorMessage     string            `json:"error_message,omitempty"`
	RequestData      json.RawMessage   `json:"request_data,omitempty"`
	SnapshotData     json.RawMessage   `json:"snapshot_data,omitempty"`
	ResponseData     json.RawMessage   `json:"response_data,omitempty"`
	Metadata         map[string]string `json:"metadata,omitempty"`
	RetryCount       int               `json:"retry_count"`
	MaxRetries       int               `json:"max_retries"`
	LastRetryAt      time.Time         `json:"last_retry_at"`
	ResolvedAt       time.Time         `json:"resolved_at"`
	ResolvedBy       string            `json:"resolved_by,omitempty"`
	ResolutionType   string            `json:"resolution_type,omitempty"`
	ResolutionNote   string            `json:"resolution_note,omitempty"`
	NextActionHint   string            `json:"next_action_hint,omitempty"`
	RecommendedAct   string            `json:"recommended_action,omitempty"`
	CreatedAt        time.Time         `json:"created_at"`
	UpdatedAt        time.Time         `json:"updated_at"`
	ExpiresAt        time.Time         `json:"expires_at"`
	Truncated        bool              `json:"truncated,omitempty"`
	ReplayLeaseUntil time.Time         `json:"replay_lease_until"`
	ReplayWorker     string            `json:"replay_worker,omitempty"`
	// ReplayOrigin says what made the entry replayable: "manual" (an
	// operator's replay or redrive), "batch" (a batch replay), "automatic"
	// (a worker took it up on its own, after capture or a recovery).
	ReplayOrigin string `json:"replay_origin,omitempty"`
	Revision     uint64 `json:"revision"`
}

// Limits.
const (
	MaxDomainLength = 64
	FallbackDomain  = "OTHER_DOMAIN"
	MaxIDLength     = 64
	MaxErrorMessage = 1000
)

var (
	domainPattern = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$`)
)

// Errors.
var (
	ErrNotFound         = errors.New("dlq: entry not found")
	ErrCapacityExceeded = errors.New("dlq: capacity exceeded")
	ErrBadPageToken     = errors.New("dlq: malformed page token")
)

// ConflictError is an illegal transition; it names the current status.
type ConflictError struct {
	ID      string
	Current Status
	Want    string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("dlq: entry %s is %s; %s", e.ID, e.Current, e.Want)
}

// validID: a letter or digit, then letters, digits, '.', '_', ':' or '-';
// at most MaxIDLength bytes. (Every replica checks each store's id, so
// this is a loop rather than a regular expression.)
func validID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == ':' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// CheckID validates a client-chosen entry id.
func CheckID(id string) error {
	if !validID(id) {
		return &fsm.ArgumentError{Domain: "dlq", FieldName: "id", Code: "INVALID_ID", Msg: fmt.Sprintf("%q: use letters, digits, '.', '_', ':', '-' (at most %d); the SDK generates UUIDv7 ids", id, MaxIDLength)}
	}
	return nil
}

// NormalizeDomain validates a domain (§8). An invalid one is kept under
// FallbackDomain with the original returned for the metadata: capture
// never loses data.
func NormalizeDomain(d string) (domain, rejected, reason string) {
	low := strings.ToLower(strings.TrimSpace(d))
	switch {
	case low == "":
		return FallbackDomain, d, "empty"
	case len(low) > MaxDomainLength:
		return FallbackDomain, d, "too_long"
	case domainPattern.MatchString(low):
		return low, "", ""
	}
	if canon := strings.NewReplacer("-", "_", " ", "_").Replace(low); domainPattern.MatchString(canon) {
		return canon, "", ""
	}
	return FallbackDomain, d, "invalid_charset"
}

func marshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("dlq: encode %T: %v", v, err))
	}
	return b
}
