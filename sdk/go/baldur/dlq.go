package baldur

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
)

// NewEntryID returns a UUIDv7: time-ordered and unique, so entries sort by
// creation and a retried store of the same entry is recognised.
func NewEntryID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	ms := uint64(time.Now().UnixMilli())
	binary.BigEndian.PutUint16(b[0:2], uint16(ms>>32))
	binary.BigEndian.PutUint32(b[2:6], uint32(ms))
	b[6] = b[6]&0x0f | 0x70
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// DLQ stores failed operations and replays them through registered handlers.
type DLQ struct {
	c *Client

	spoolMu   sync.Mutex
	spoolPath string
	spoolMax  int
	spooled   atomic.Int64
	dropped   atomic.Int64
	kick      chan struct{}
}

// DLQ returns the dead-letter queue API.
func (c *Client) DLQ() *DLQ { return c.dlq }

// WithSpoolDir sets where entries are kept while the cluster is
// unreachable (default: the OS temp dir, per instance id) and how many at
// most (default 10,000; more are refused with ErrSpoolFull and counted).
func WithSpoolDir(dir string, max int) Option {
	return func(o *options) { o.spoolDir, o.spoolMax = dir, max }
}

// ErrSpoolFull is returned by Store when the cluster is unreachable and the
// local spool is full.
var ErrSpoolFull = errors.New("baldur: DLQ spool full")

func newDLQ(c *Client) (*DLQ, error) {
	dir := c.opts.spoolDir
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "baldur-spool")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("baldur: spool dir: %w", err)
	}
	d := &DLQ{c: c, spoolPath: filepath.Join(dir, "dlq-"+safeName(c.opts.instanceID)+".jsonl"), spoolMax: c.opts.spoolMax, kick: make(chan struct{}, 1)}
	if d.spoolMax <= 0 {
		d.spoolMax = 10000
	}
	n, _ := d.readSpool()
	d.spooled.Store(int64(len(n)))
	return d, nil
}

func safeName(s string) string {
	out := []byte(s)
	for i, ch := range out {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
			out[i] = '_'
		}
	}
	return string(out)
}

// Entry is a DLQ entry as stored (the API message).
type Entry = pb.DLQEntry

// StoreResult tells where an entry went.
type StoreResult struct {
	ID      string
	Created bool // false: an entry with this id existed already
	Spooled bool // kept locally; delivered after reconnect
}

// Store stores e (ID assigned with NewEntryID when empty). When the cluster
// is unreachable the entry goes to the local spool and is delivered, in
// order, after reconnect; the server deduplicates by id.
func (d *DLQ) Store(ctx context.Context, e *Entry) (StoreResult, error) {
	if e.Id == "" {
		e.Id = NewEntryID()
	}
	cctx, cancel := context.WithTimeout(d.c.callContext(ctx), 5*time.Second)
	resp, err := pb.NewDLQServiceClient(d.c.conn).StoreEntry(cctx, &pb.StoreEntryRequest{Entry: e, View: "BASIC"}, failFast{})
	cancel()
	if err == nil {
		return StoreResult{ID: resp.Entry.Id, Created: resp.Created}, nil
	}
	switch Reason(err) {
	case "UNAVAILABLE", "NO_LEADER", "NOT_LEADER", "LEADER_NOT_READY", "SHUTTING_DOWN", "RESULT_UNKNOWN", "DEADLINE_EXCEEDED":
	default:
		return StoreResult{}, err // the server refused the entry: spooling would not help
	}
	if err := d.spool(e); err != nil {
		return StoreResult{}, err
	}
	return StoreResult{ID: e.Id, Spooled: true}, nil
}

func (d *DLQ) spool(e *Entry) error {
	d.spoolMu.Lock()
	defer d.spoolMu.Unlock()
	if d.spooled.Load() >= int64(d.spoolMax) {
		d.dropped.Add(1)
		return ErrSpoolFull
	}
	line, err := protojson.Marshal(e)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(d.spoolPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("baldur: spool: %w", err)
	}
	defer f.Close()
	if _, err := f.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("baldur: spool: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("baldur: spool: %w", err)
	}
	d.spooled.Add(1)
	select {
	case d.kick <- struct{}{}:
	default:
	}
	return nil
}

func (d *DLQ) readSpool() ([]*Entry, error) {
	f, err := os.Open(d.spoolPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []*Entry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		e := &Entry{}
		if protojson.Unmarshal(sc.Bytes(), e) == nil {
			out = append(out, e)
		}
	}
	return out, sc.Err()
}

// SpoolStats are the spool's counters.
type SpoolStats struct {
	Spooled int64 // entries waiting in the spool
	Dropped int64 // entries refused because the spool was full
}

// SpoolStats returns the spool's counters.
func (d *DLQ) SpoolStats() SpoolStats {
	return SpoolStats{Spooled: d.spooled.Load(), Dropped: d.dropped.Load()}
}

// deliverLoop sends spooled entries in order once the cluster answers.
func (d *DLQ) deliverLoop(ctx context.Context) {
	// An empty spool waits for the kick of the next spooled entry; a
	// spool the cluster did not take is tried again every 500 ms.
	t := time.NewTimer(500 * time.Millisecond)
	defer t.Stop()
	client := pb.NewDLQServiceClient(d.c.conn)
	for {
		var retry <-chan time.Time
		if d.spooled.Load() > 0 {
			t.Reset(500 * time.Millisecond)
			retry = t.C
		}
		select {
		case <-ctx.Done():
			return
		case <-retry:
		case <-d.kick:
		}
		if d.spooled.Load() == 0 {
			continue
		}
		d.spoolMu.Lock()
		entries, _ := d.readSpool()
		sent := 0
		for _, e := range entries {
			cctx, cancel := context.WithTimeout(d.c.callContext(ctx), 5*time.Second)
			_, err := client.StoreEntry(cctx, &pb.StoreEntryRequest{Entry: e}, failFast{})
			cancel()
			if err != nil {
				switch Reason(err) {
				case "INVALID_ARGUMENT", "INVALID_ID", "REQUEST_TOO_LARGE":
					// The server will never take it; drop it rather than block the rest.
					d.dropped.Add(1)
				default:
					goto rewrite // unreachable again: keep the rest, in order
				}
			}
			sent++
		}
	rewrite:
		if sent > 0 {
			rest := entries[sent:]
			tmp := d.spoolPath + ".tmp"
			if f, err := os.Create(tmp); err == nil {
				w := bufio.NewWriter(f)
				for _, e := range rest {
					line, _ := protojson.Marshal(e)
					w.Write(append(line, '\n'))
				}
				w.Flush()
				f.Sync()
				f.Close()
				os.Rename(tmp, d.spoolPath)
				d.spooled.Store(int64(len(rest)))
			}
		}
		d.spoolMu.Unlock()
	}
}

// ReplayHandler replays one entry. Return nil when the operation succeeded;
// idempotencyKey is unique per attempt ("{domain}:{id}:{attempt}").
type ReplayHandler func(ctx context.Context, e *Entry, idempotencyKey string) error

// HandleReplay registers a handler for a domain and starts a worker that
// leases PENDING entries of that domain, runs the handler and reports the
// outcome. Replay pauses while the domain's breaker is OPEN or the global
// emergency level is LEVEL_2 or higher. A worker that dies mid-replay loses
// its lease; the entry returns to PENDING after the lease timeout.
func (d *DLQ) HandleReplay(domain string, h ReplayHandler, opts ...ReplayOption) {
	cfg := replayConfig{lease: 30 * time.Second, idle: 500 * time.Millisecond, worker: d.c.opts.instanceID, batch: 1, gate: true}
	for _, o := range opts {
		o(&cfg)
	}
	d.c.wg.Add(1)
	go func() {
		defer d.c.wg.Done()
		d.replayLoop(d.c.runCtx, domain, h, cfg)
	}()
}

type replayConfig struct {
	lease  time.Duration
	idle   time.Duration
	worker string
	batch  int
	gate   bool
}

// ReplayGateKey is the idempotency gate key a replay attempt runs under.
func ReplayGateKey(attemptKey string) string { return "dlq-replay:" + attemptKey }

// WithoutReplayGate runs replay attempts without the idempotency gate (one
// Raft write less before and after each; the handler alone must then make
// a repeated attempt harmless).
func WithoutReplayGate() ReplayOption { return func(c *replayConfig) { c.gate = false } }

// ReplayOption configures HandleReplay.
type ReplayOption func(*replayConfig)

// WithReplayLease sets the replay lease (default 30s, 5s..10m).
func WithReplayLease(d time.Duration) ReplayOption { return func(c *replayConfig) { c.lease = d } }

// WithReplayPoll sets how long an idle worker waits before asking again (default 500ms).
func WithReplayPoll(d time.Duration) ReplayOption { return func(c *replayConfig) { c.idle = d } }

// WithReplayBatch lets the worker lease up to n entries at a time (1..100,
// default 1) and run the handler on them concurrently; their outcomes are
// reported together. The cluster leases them in one Raft entry and commits
// concurrent outcomes together, so a batch costs about two writes instead
// of two per entry. The handler must be safe for concurrent use.
func WithReplayBatch(n int) ReplayOption {
	return func(c *replayConfig) { c.batch = min(max(n, 1), 100) }
}

func (d *DLQ) replayLoop(ctx context.Context, domain string, h ReplayHandler, cfg replayConfig) {
	client := pb.NewDLQServiceClient(d.c.conn)
	for ctx.Err() == nil {
		if d.c.killSwitch.Load() {
			// The system is disabled: replay stops until it is enabled.
			select {
			case <-ctx.Done():
				return
			case <-time.After(cfg.idle):
			}
			continue
		}
		resp, err := client.AcquireReplay(d.c.callContext(ctx), &pb.AcquireReplayRequest{Domains: []string{domain}, Worker: cfg.worker,
			Lease: durationpb.New(cfg.lease), MaxEntries: int32(cfg.batch)})
		if err != nil || resp.Entry == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(cfg.idle):
			}
			continue
		}
		leased := resp.Leased
		if len(leased) == 0 { // one entry (or a server without max_entries)
			leased = []*pb.LeasedEntry{{Entry: resp.Entry, IdempotencyKey: resp.IdempotencyKey}}
		}
		var wg sync.WaitGroup
		for _, l := range leased {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d.replayOne(ctx, client, h, cfg, l)
			}()
		}
		wg.Wait()
	}
}

// replayOne runs the handler on one leased entry and reports its outcome.
//
// Unless WithoutReplayGate was given, the attempt runs through the
// fleet's idempotency gate under "dlq-replay:" + its per-attempt key
// (Baldur §5.3): an attempt already done (SKIP) is reported a success
// without running again ("duplicate_skip"); one running elsewhere (ABORT)
// is left to that runner; a gate that cannot be reached does not stop the
// replay (fail-open).
func (d *DLQ) replayOne(ctx context.Context, client pb.DLQServiceClient, h ReplayHandler, cfg replayConfig, l *pb.LeasedEntry) {
	hctx, cancel := context.WithTimeout(ctx, cfg.lease)
	var herr error
	note, resolution := "", ""
	if cfg.gate && l.IdempotencyKey != "" {
		_, herr = Idempotent(hctx, d.c, ReplayGateKey(l.IdempotencyKey), func(ctx context.Context) (struct{}, error) {
			return struct{}{}, safeReplay(ctx, h, l.Entry, l.IdempotencyKey)
		}, WithFailOpen(), WithExecutionTTL(cfg.lease))
		var dup *DuplicateError
		if errors.As(herr, &dup) {
			if dup.Decision != DecisionSkip {
				cancel()
				return // running elsewhere: that runner reports it
			}
			herr, resolution = nil, "duplicate_skip"
		}
	} else {
		herr = safeReplay(hctx, h, l.Entry, l.IdempotencyKey)
	}
	cancel()
	if herr != nil {
		note = herr.Error()
	}
	cctx, ccancel := context.WithTimeout(d.c.callContext(context.WithoutCancel(ctx)), 5*time.Second)
	_, _ = client.CompleteReplay(cctx, &pb.CompleteReplayRequest{Id: l.Entry.Id, Worker: cfg.worker, Success: herr == nil, Note: note, ResolutionType: resolution})
	ccancel()
}

func safeReplay(ctx context.Context, h ReplayHandler, e *Entry, key string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler crash: %v", r)
		}
	}()
	return h(ctx, e, key)
}

// RequestData decodes an entry's request_data into v.
func RequestData(e *Entry, v any) error {
	if e.RequestData == nil {
		return errors.New("baldur: entry has no request_data")
	}
	raw, err := protojson.Marshal(e.RequestData)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, v)
}
