package dlq

import (
	"context"
	"fmt"
	"sync"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/internal/fsm"
)

// Replicated is the Store kept in the Raft-replicated bbolt state: reads
// come from this node's state (after ReadBarrier), writes are commands the
// leader proposes and every replica applies with Apply. The server supplies
// the three ways it reaches the log.
type Replicated struct {
	// View reads this node's applied state.
	View func(func(fsm.KV) error) error
	// Propose commits one DLQ command for c on the leader and returns what
	// Apply answered. A non-zero at is the command's time (a store's body
	// carries it too); otherwise the leader stamps its clock. A BATCH
	// answers each of its commands in Result.Batch.
	Propose func(ctx context.Context, c Caller, body *raftv1.DLQCommand, at time.Time) (Result, uint64, error)
	// Barrier is the server's linearizable read barrier.
	Barrier func(ctx context.Context, consistency string) error
	// Now is the leader's clock.
	Now func() time.Time
	// Limits returns the DLQ settings in force (the runtime configuration's
	// dlq section, else the startup flags); MaxEntry bounds one log entry.
	Limits   func() Limits
	MaxEntry int

	// leasing holds ids being leased right now, so concurrent workers pick
	// different entries instead of racing for the oldest one.
	mu      sync.Mutex
	leasing map[string]bool

	// domains are the domains holding entries, read at most once a second.
	domains   map[string]bool
	domainsAt time.Time
}

// checkDomain refuses a store that would start a domain beyond
// Limits.MaxDomains.
func (r *Replicated) checkDomain(domain string) error {
	if r.Limits().MaxDomains <= 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.domainsAt) > time.Second || r.domains == nil {
		r.domains = map[string]bool{}
		_ = r.View(func(kv fsm.KV) error {
			kv.Scan(BucketCounts, []byte("d/"), false, func(k, _ []byte) bool {
				if len(k) < 2 || string(k[:2]) != "d/" {
					return false
				}
				r.domains[string(k[2:])] = true
				return true
			})
			return nil
		})
		r.domainsAt = time.Now()
	}
	if r.domains[domain] {
		return nil
	}
	if len(r.domains) >= r.Limits().MaxDomains {
		return r.Limits().DomainLimitError(domain, len(r.domains))
	}
	r.domains[domain] = true // counted until the next read
	return nil
}

var _ Store = (*Replicated)(nil)

func (r *Replicated) Get(_ context.Context, id string) (Entry, bool, error) {
	var e Entry
	var ok bool
	err := r.View(func(kv fsm.KV) error { e, ok = Get(kv, id); return nil })
	return e, ok, err
}

func (r *Replicated) List(_ context.Context, f Filter, size int, token string) ([]Entry, string, error) {
	var out []Entry
	var next string
	err := r.View(func(kv fsm.KV) error {
		var err error
		out, next, err = List(kv, f, size, token)
		return err
	})
	return out, next, err
}

func (r *Replicated) Stats(context.Context) (Stats, error) {
	var st Stats
	err := r.View(func(kv fsm.KV) error { st = GetStats(kv); return nil })
	return st, err
}

func (r *Replicated) ReadBarrier(ctx context.Context, consistency string) error {
	return r.Barrier(ctx, consistency)
}

// Store captures e. The entry carries the command's time, so replicas
// store its bytes as they are (StoreCommand); the leader commits concurrent
// stores together (group commit).
func (r *Replicated) Store(ctx context.Context, c Caller, e Entry) (Result, uint64, error) {
	if err := r.checkDomain(e.Domain); err != nil {
		return Result{}, 0, err
	}
	now := time.Unix(0, r.Now().UnixNano()).UTC()
	body := StoreCommand(e, now, r.Limits())
	if n := len(body.EntryJson); r.MaxEntry > 0 && n > r.MaxEntry-4096 {
		return Result{}, 0, &fsm.ArgumentError{FieldName: "entry", Code: "REQUEST_TOO_LARGE", Msg: fmt.Sprintf("the entry is %d bytes after truncation; shorten metadata", n)}
	}
	res, rev, err := r.Propose(ctx, c, body, now)
	if err != nil {
		return res, rev, err
	}
	if res.Changed {
		// What the replicas stored: e as StoreCommand encoded it, at the
		// revision of the entry that carried it (no need to decode the
		// stored bytes).
		res.Entry = Stored(e, now, rev)
	}
	return res, rev, nil
}

func (r *Replicated) Transition(ctx context.Context, c Caller, cmd *raftv1.DLQCommand) (Entry, error) {
	res, _, err := r.Propose(ctx, c, cmd, time.Time{})
	return res.Entry, err
}

// Acquire leases up to max entries in one log entry: one ACQUIRE, or a
// BATCH of them.
func (r *Replicated) Acquire(ctx context.Context, c Caller, domain, worker string, lease time.Duration, max int) ([]Entry, error) {
	var candidates []string
	lim := r.Limits() // not inside View: it may read the state itself
	_ = r.View(func(kv fsm.KV) error {
		entries, _, _ := List(kv, Filter{Domain: domain, Status: Pending}, max+64, "")
		for _, e := range entries {
			if lim.Replayable(e) {
				candidates = append(candidates, e.ID)
			}
		}
		return nil
	})
	picks := r.claim(candidates, max)
	if len(picks) == 0 {
		return nil, nil
	}
	defer r.release(picks)
	acquire := func(id string) *raftv1.DLQCommand {
		return &raftv1.DLQCommand{Op: raftv1.DLQCommand_ACQUIRE, Id: id, Worker: worker, LeaseNanos: int64(lease)}
	}
	if len(picks) == 1 {
		e, err := r.Transition(ctx, c, acquire(picks[0]))
		if err != nil {
			return nil, err
		}
		return []Entry{e}, nil
	}
	b := &raftv1.DLQCommand{Op: raftv1.DLQCommand_BATCH}
	for _, id := range picks {
		b.Stores = append(b.Stores, acquire(id))
	}
	res, _, err := r.Propose(ctx, c, b, time.Time{})
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, it := range res.Batch {
		// An entry another command took meanwhile is skipped; the rest
		// are leased.
		if it.Err == nil && it.Result.Changed {
			out = append(out, it.Result.Entry)
		}
	}
	return out, nil
}

// claim marks up to max ids of candidates not being leased already.
func (r *Replicated) claim(candidates []string, max int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.leasing == nil {
		r.leasing = map[string]bool{}
	}
	var out []string
	for _, id := range candidates {
		if len(out) == max {
			break
		}
		if !r.leasing[id] {
			r.leasing[id] = true
			out = append(out, id)
		}
	}
	return out
}

func (r *Replicated) release(ids []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		delete(r.leasing, id)
	}
}

func (r *Replicated) Purge(ctx context.Context, c Caller, ids []string, olderThan time.Duration) (int64, uint64, error) {
	before, _ := r.Stats(ctx)
	_, rev, err := r.Propose(ctx, c, &raftv1.DLQCommand{Op: raftv1.DLQCommand_PURGE, Ids: ids, OlderThanNanos: int64(olderThan)}, time.Time{})
	if err != nil {
		return 0, 0, err
	}
	after, _ := r.Stats(ctx)
	return before.ByStatus[string(Archived)] - after.ByStatus[string(Archived)], rev, nil
}

func (r *Replicated) Due(_ context.Context, now time.Time) ([]Due, error) {
	var out []Due
	retention := r.Limits().Retention()
	err := r.View(func(kv fsm.KV) error { out = DueWork(kv, now, retention, dueLimit); return nil })
	return out, err
}
