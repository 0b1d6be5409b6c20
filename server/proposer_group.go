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
	storeBatchVersion   uint32 = 2
	batchVersion        uint32 = 3
	commandBatchVersion uint32 = 8
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

// storeGroups queues commands of one kind for the committer goroutines.
type storeGroups struct {
	p        *proposer
	mu       sync.Mutex
	queue    []*groupedStore
	inFlight int
	observe  func(stores int) // group sizes, for baldur_dlq_store_group_size
	// commitGroup commits a group: DLQ stores and completions as a DLQ
	// BATCH (commitDLQ), anything else as a CommandBatch (commitCommands).
	commitGroup func(group []*groupedStore)
	// keyOf, when set, names what a command changes: two commands with the
	// same key never share a group (an idempotency acquire's token is the
	// entry's index, so it must be the only acquire of its key there).
	keyOf func(cmd *raftv1.Command) string
}

// batchedKey is the key of a command the generic groups take ("" for
// any other: it is committed on its own).
func batchedKey(cmd *raftv1.Command) string {
	if c := cmd.GetIdempotency(); c != nil && c.GetOp() != raftv1.IdempotencyCommand_EXPIRE {
		return c.GetKey()
	}
	return ""
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
		group := g.take()
		if len(group) == 0 {
			g.inFlight--
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		g.commitGroup(group)
	}
}

// take removes the next group from the queue (g.mu held): the oldest
// commands up to groupMaxItems and groupMaxBytes, leaving in the queue, in
// order, a command whose key the group already has.
func (g *storeGroups) take() []*groupedStore {
	var group []*groupedStore
	var keys map[string]bool
	bytes, kept := 0, g.queue[:0]
	for i, it := range g.queue {
		if len(group) == groupMaxItems || (len(group) > 0 && bytes+it.size > groupMaxBytes) {
			kept = append(kept, g.queue[i:]...)
			break
		}
		if g.keyOf != nil {
			if k := g.keyOf(it.cmd); k != "" {
				if keys[k] {
					kept = append(kept, it)
					continue
				}
				if keys == nil {
					keys = map[string]bool{}
				}
				keys[k] = true
			}
		}
		group = append(group, it)
		bytes += it.size
	}
	clear(g.queue[len(kept):])
	g.queue = kept
	return group
}

// commitDLQ commits a group of DLQ stores and completions.
func (g *storeGroups) commitDLQ(group []*groupedStore) {
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
	g.commitEach(group)
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

// commitCommands commits a group as one CommandBatch entry (one entry
// per command while a voter runs a binary without batches).
func (g *storeGroups) commitCommands(group []*groupedStore) {
	if len(group) == 1 {
		g.commitOne(group[0])
		return
	}
	switch err := g.p.s.checkCommandVersion(commandBatchVersion); {
	case errors.Is(err, errUpgradePending):
		g.commitEach(group)
		return
	case err != nil:
		for _, it := range group {
			it.done <- groupOutcome{err: err}
		}
		return
	}
	batch := &raftv1.CommandBatch{Commands: make([]*raftv1.Command, len(group))}
	for i, it := range group {
		batch.Commands[i] = it.cmd
	}
	res, err := g.p.commit(context.Background(), &raftv1.Command{Actor: systemActor, Reason: "group commit",
		Version: commandBatchVersion, Body: &raftv1.Command_Batch{Batch: batch}})
	g.count(len(group))
	applied := resultOf[[]applyResult](res)
	if err == nil && len(applied) != len(group) {
		err = fmt.Errorf("server: a batch of %d commands applied as %d", len(group), len(applied))
	}
	for i, it := range group {
		if err != nil {
			it.done <- groupOutcome{err: err}
			continue
		}
		it.done <- groupOutcome{res: applied[i], err: applied[i].Err}
	}
}

// commitEach sends each command of a group as its own entry, concurrently.
func (g *storeGroups) commitEach(group []*groupedStore) {
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

func (g *storeGroups) count(stores int) {
	if g.observe != nil {
		g.observe(stores)
	}
}
