package server

import (
	"context"
	"errors"
	"fmt"
	"sync"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/dlq"
	"github.com/baldurhq/baldurd/raftstore"
	"google.golang.org/protobuf/proto"
)

// Group commit of DLQ writes. Every Raft entry costs a round: a log fsync
// on the leader and on a follower, an AppendEntries exchange and an FSM
// transaction on every node. Stores arrive many at a time when a fleet
// fails, and replay workers complete entries many at a time, so the leader
// sends them together: a command goes out at once when fewer than
// groupInFlight groups are being committed, and otherwise waits and leaves
// with every command that arrived meanwhile, as one BATCH entry (a
// STORE_BATCH while a voter runs a binary without BATCH). Nothing waits on
// a timer, so a lone command pays no extra latency. One group in flight
// measured best at 64 concurrent callers (two or four in flight make
// smaller groups and cost more CPU per store; see docs/benchmarks.md).
const (
	groupInFlight = 1
	groupMaxItems = 256
	// groupMaxBytes keeps a group's entry well under raftstore.MaxEntrySize.
	groupMaxBytes = 768 << 10
	// Command versions: STORE_BATCH needs 2, BATCH 3; while a voter runs an
	// older binary, commands go one per entry.
	storeBatchVersion uint32 = 2
	batchVersion      uint32 = 3
)

type groupedStore struct {
	cmd  *raftv1.Command
	size int
	done chan groupOutcome // buffered: the committer never blocks on it
}

type groupOutcome struct {
	res applyResult
	err error
}

// groupable is a command that may share a Raft entry with others: a DLQ
// store or replay completion of command version 1.
func groupable(cmd *raftv1.Command) bool {
	switch cmd.GetDlq().GetOp() {
	case raftv1.DLQCommand_STORE, raftv1.DLQCommand_COMPLETE:
		return cmd.Version <= 1
	}
	return false
}

// storeGroups queues stores for the committer goroutines.
type storeGroups struct {
	p        *proposer
	mu       sync.Mutex
	queue    []*groupedStore
	inFlight int
	observe  func(stores int) // group sizes, for baldur_dlq_store_group_size
}

// submit queues a groupable command (a store built by dlq.StoreCommand,
// stamped with the time its body carries) and waits for its outcome. A
// caller that gives up gets ErrIndeterminate: its store may still be
// committed.
func (g *storeGroups) submit(ctx context.Context, cmd *raftv1.Command) (applyResult, error) {
	if cmd.TimeUnixNano == 0 {
		cmd.TimeUnixNano = g.p.s.now().UnixNano()
	}
	it := &groupedStore{cmd: cmd, size: proto.Size(cmd), done: make(chan groupOutcome, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, it)
	if g.inFlight < groupInFlight {
		g.inFlight++
		go g.commitLoop()
	}
	g.mu.Unlock()
	select {
	case out := <-it.done:
		return out.res, out.err
	case <-ctx.Done():
		return applyResult{}, fmt.Errorf("%w: %v", raftstore.ErrIndeterminate, ctx.Err())
	}
}

// commitLoop commits groups until the queue is empty.
func (g *storeGroups) commitLoop() {
	for {
		g.mu.Lock()
		n, bytes := 0, 0
		for n < len(g.queue) && n < groupMaxItems && (n == 0 || bytes+g.queue[n].size <= groupMaxBytes) {
			bytes += g.queue[n].size
			n++
		}
		if n == 0 {
			g.inFlight--
			g.mu.Unlock()
			return
		}
		group := make([]*groupedStore, n)
		copy(group, g.queue)
		g.queue = append(g.queue[:0], g.queue[n:]...)
		g.mu.Unlock()
		g.commit(group)
	}
}

func (g *storeGroups) commit(group []*groupedStore) {
	if len(group) == 1 {
		g.commitOne(group[0])
		return
	}
	version, op := batchVersion, raftv1.DLQCommand_BATCH
	if err := g.p.s.checkCommandVersion(batchVersion); err != nil && onlyStores(group) {
		version, op = storeBatchVersion, raftv1.DLQCommand_STORE_BATCH
	}
	switch err := g.p.s.checkCommandVersion(version); {
	case err == nil:
		g.commitBatch(group, op, version)
		return
	case !errors.Is(err, errUpgradePending):
		for _, it := range group {
			it.done <- groupOutcome{err: err}
		}
		return
	}
	// Voters that cannot apply the batch yet: one entry per command,
	// concurrently, as before groups existed.
	var wg sync.WaitGroup
	for _, it := range group {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.commitOne(it)
		}()
	}
	wg.Wait()
}

func onlyStores(group []*groupedStore) bool {
	for _, it := range group {
		if it.cmd.GetDlq().GetOp() != raftv1.DLQCommand_STORE {
			return false
		}
	}
	return true
}

// commitOne sends one command as its own entry, with its caller's request
// id.
func (g *storeGroups) commitOne(it *groupedStore) {
	res, err := g.p.commit(context.Background(), it.cmd)
	g.count(1)
	it.done <- groupOutcome{res: res, err: err}
}

func (g *storeGroups) commitBatch(group []*groupedStore, op raftv1.DLQCommand_Op, version uint32) {
	batch := &raftv1.DLQCommand{Op: op, Stores: make([]*raftv1.DLQCommand, len(group))}
	for i, it := range group {
		body := it.cmd.GetDlq()
		body.Actor, body.TimeUnixNano = it.cmd.Actor, it.cmd.TimeUnixNano
		if op == raftv1.DLQCommand_BATCH {
			body.Reason = it.cmd.Reason
		}
		batch.Stores[i] = body
	}
	cmd := &raftv1.Command{Actor: systemActor, Reason: "dlq store", Version: version,
		Body: &raftv1.Command_Dlq{Dlq: batch}}
	res, err := g.p.commit(context.Background(), cmd)
	g.count(len(group))
	applied := resultOf[dlq.Result](res).Batch
	if err == nil && len(applied) != len(group) {
		err = fmt.Errorf("dlq: a batch of %d commands applied as %d", len(group), len(applied))
	}
	for i, it := range group {
		if err != nil {
			it.done <- groupOutcome{err: err}
			continue
		}
		item := applied[i]
		it.done <- groupOutcome{res: applyResult{Revision: res.Revision, Value: item.Result, Err: item.Err}, err: item.Err}
	}
}

func (g *storeGroups) count(stores int) {
	if g.observe != nil {
		g.observe(stores)
	}
}
