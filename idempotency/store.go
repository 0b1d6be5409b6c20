package idempotency

import (
	"context"
	"encoding/json"
	"time"
)

// Caller is who makes a gate call.
type Caller struct {
	Actor     string
	RequestID string
}

// Store keeps the gate's records: the replicated state (the default,
// server/idempotency_service.go) or PostgreSQL (postgres/idempotency.go,
// --idempotency-store=postgres) for volumes beyond what a replicated state
// machine should hold. Both decide with Acquire and Finish.
type Store interface {
	// Acquire decides an acquire (§6.3) and stores its record.
	Acquire(ctx context.Context, c Caller, key string, execTTL, memTTL time.Duration) (decision string, r Record, err error)
	// Finish completes (failMsg nil) or fails the execution token names.
	Finish(ctx context.Context, c Caller, key string, token uint64, result json.RawMessage, failMsg *string) (Record, error)
	// Get returns a key's live record (ErrNotFound when there is none).
	Get(ctx context.Context, key, consistency string) (Record, error)
}
