package raftstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

var (
	// metaBucket holds the applied index/term and the schema version. It is
	// owned by raftstore; every other bucket comes from Config.Buckets.
	metaBucket      = []byte("_meta")
	keyAppliedIndex = []byte("applied_index")
	keyAppliedTerm  = []byte("applied_term")
	keySchema       = []byte("schema_version")
)

// Applier gives meaning to log entries. Implementations must be
// deterministic: no clock, randomness, environment or I/O beyond kv.
type Applier interface {
	// Apply applies one committed command inside the batch's write
	// transaction and returns the value handed to the proposer's future.
	Apply(kv KV, index, term uint64, data []byte) any
	// Applied is called after a batch commits and after a restore, with the
	// node's applied index. It runs on the FSM goroutine and must not block.
	Applied(index uint64)
}

// fsm implements raft.BatchingFSM over a bbolt file.
//
// The file is written without fsync (bbolt NoSync). Nothing acknowledged
// depends on it: every entry this node applies is first fsynced into its
// own Raft log (or arrives in a snapshot, which the snapshot store fsyncs),
// so the file is a materialized view of log and snapshot. While the file is
// open for writing, an open marker (state.db.open) holds the kernel's boot
// id. After a process crash the page cache still holds every write and the
// file is used as it is; after a crash of the machine (the marker names
// another boot) it may be torn, so it is set aside and rebuilt from the
// latest snapshot and the log (rqlite runs SQLite with synchronous=OFF
// on the same reasoning). The file is synced before each snapshot is
// persisted and at a clean close, which removes the marker.
type fsm struct {
	path    string
	buckets [][]byte
	schema  uint32
	applier Applier

	marker  *os.File // state.db.open, locked while the node runs
	rebuild bool     // state.db was missing or set aside: restore the latest snapshot at start
	set     string   // why the previous file was set aside ("" if it was not)

	mu sync.RWMutex // guards db; held for writing only while Restore swaps files
	db *bolt.DB

	restores atomic.Uint64 // snapshots installed since open

	appliedMu sync.Mutex
	applied   uint64
	advanced  chan struct{} // closed and replaced whenever applied grows
}

func openFSM(path string, buckets [][]byte, schema uint32, applier Applier) (*fsm, error) {
	f := &fsm{path: path, buckets: buckets, schema: schema, applier: applier, advanced: make(chan struct{})}
	if err := f.claim(); err != nil {
		return nil, err
	}
	if err := f.open(); err != nil {
		f.release(false)
		return nil, err
	}
	return f, nil
}

// markerSize is the size of the open marker's record (a boot id is 36
// characters).
const markerSize = 64

// bootID names the running kernel's boot; "" where unknown, and then any
// stop without a clean close counts as a machine crash.
var bootID = func() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// claim takes the open marker (refusing a state file another process has
// open), decides whether the state file can be used as it is, and records
// this boot in the marker before anything is written.
func (f *fsm) claim() error {
	mf, err := os.OpenFile(f.path+".open", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open state marker: %w", err)
	}
	if err := lockFile(mf); err != nil {
		mf.Close()
		return fmt.Errorf("%s is in use by another process: %w", f.path, err)
	}
	prev, err := io.ReadAll(mf)
	if err != nil {
		mf.Close()
		return fmt.Errorf("read state marker: %w", err)
	}
	boot := bootID()
	was := strings.TrimSpace(string(prev))
	_, statErr := os.Stat(f.path)
	switch {
	case errors.Is(statErr, fs.ErrNotExist):
		f.rebuild = true
	case statErr != nil:
		mf.Close()
		return fmt.Errorf("state db: %w", statErr)
	case len(prev) > 0 && (boot == "" || was != boot):
		f.set = fmt.Sprintf("it was open for writing under boot %q and the machine has restarted since (now %q)", was, boot)
		if err := os.Rename(f.path, f.path+".untrusted"); err != nil {
			mf.Close()
			return fmt.Errorf("set aside the state db: %w", err)
		}
		f.rebuild = true
	}
	// The boot id is written over the old one at a fixed size, never after
	// a truncation: a crash here leaves the old id or the new one, not an
	// empty marker that would read as a clean close.
	_, err = mf.WriteAt([]byte(fmt.Sprintf("%-*s", markerSize, boot)), 0)
	if err == nil {
		err = mf.Sync()
	}
	if err != nil {
		mf.Close()
		return fmt.Errorf("write state marker: %w", err)
	}
	syncDir(filepath.Dir(f.path))
	f.marker = mf
	return nil
}

// release gives the marker up; clean removes it first (the state file has
// been synced and closed).
func (f *fsm) release(clean bool) {
	if f.marker == nil {
		return
	}
	if clean {
		os.Remove(f.marker.Name())
		syncDir(filepath.Dir(f.path))
	}
	f.marker.Close()
	f.marker = nil
}

func boltOptions() *bolt.Options {
	return &bolt.Options{Timeout: timeoutOpen, NoFreelistSync: true, FreelistType: bolt.FreelistMapType, NoSync: true, NoGrowSync: true}
}

// open opens the state file, creates missing buckets and loads the applied
// index. Callers hold mu for writing (or own f exclusively).
func (f *fsm) open() error {
	db, err := bolt.Open(f.path, 0o600, boltOptions())
	if err != nil {
		return fmt.Errorf("open state db %s: %w", f.path, err)
	}
	var applied uint64
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		if v := meta.Get(keySchema); v != nil && binary.BigEndian.Uint32(v) > f.schema {
			return fmt.Errorf("state db schema version %d is newer than this binary's %d", binary.BigEndian.Uint32(v), f.schema)
		}
		for _, b := range f.buckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		var sv [4]byte
		binary.BigEndian.PutUint32(sv[:], f.schema)
		if err := meta.Put(keySchema, sv[:]); err != nil {
			return err
		}
		applied, _ = readApplied(tx)
		return nil
	})
	if err != nil {
		db.Close()
		return fmt.Errorf("prepare state db: %w", err)
	}
	f.db = db
	f.setApplied(applied, true)
	return nil
}

func readApplied(tx *bolt.Tx) (index, term uint64) {
	meta := tx.Bucket(metaBucket)
	if meta == nil {
		return 0, 0
	}
	if v := meta.Get(keyAppliedIndex); len(v) == 8 {
		index = binary.BigEndian.Uint64(v)
	}
	if v := meta.Get(keyAppliedTerm); len(v) == 8 {
		term = binary.BigEndian.Uint64(v)
	}
	return index, term
}

func (f *fsm) setApplied(index uint64, force bool) {
	f.appliedMu.Lock()
	if force || index > f.applied {
		f.applied = index
		close(f.advanced)
		f.advanced = make(chan struct{})
	}
	f.appliedMu.Unlock()
}

func (f *fsm) appliedIndex() uint64 {
	f.appliedMu.Lock()
	defer f.appliedMu.Unlock()
	return f.applied
}

// waitApplied blocks until the FSM has applied index or ctx ends.
func (f *fsm) waitApplied(ctx context.Context, index uint64) error {
	for {
		f.appliedMu.Lock()
		applied, ch := f.applied, f.advanced
		f.appliedMu.Unlock()
		if applied >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for index %d (applied %d): %w", index, applied, ctx.Err())
		}
	}
}

// Apply implements raft.FSM.
func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch implements raft.BatchingFSM: one write transaction per batch,
// entries at or below the stored applied index skipped.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	resp := make([]any, len(logs))
	f.mu.RLock()
	defer f.mu.RUnlock()
	var last, lastTerm uint64
	err := f.db.Update(func(tx *bolt.Tx) error {
		applied, _ := readApplied(tx)
		kv := NewKV(tx)
		for i, l := range logs {
			if l.Index <= applied {
				continue
			}
			if l.Type == raft.LogCommand {
				resp[i] = f.applier.Apply(kv, l.Index, l.Term, l.Data)
			}
			last, lastTerm = l.Index, l.Term
		}
		if last == 0 {
			return nil
		}
		// bbolt keeps a reference to values until commit: one buffer each.
		meta := tx.Bucket(metaBucket)
		if err := meta.Put(keyAppliedIndex, binary.BigEndian.AppendUint64(nil, last)); err != nil {
			return err
		}
		return meta.Put(keyAppliedTerm, binary.BigEndian.AppendUint64(nil, lastTerm))
	})
	if err != nil {
		// A state file that cannot commit cannot stay a replica.
		panic(fmt.Sprintf("raftstore: apply batch: %v", err))
	}
	if last != 0 {
		f.setApplied(last, false)
		f.applier.Applied(last)
	}
	return resp
}

// Snapshot implements raft.FSM by pinning a read transaction; Persist
// streams it while applies continue.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	tx, err := f.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("begin snapshot tx: %w", err)
	}
	return &fsmSnapshot{db: f.db, tx: tx, schema: f.schema}, nil
}

// Restore implements raft.FSM: verify into a temporary file, then swap.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	tmp := f.path + ".restore-tmp"
	hdr, err := receiveSnapshot(rc, tmp, f.schema)
	if err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.db.Close(); err != nil {
		return fmt.Errorf("close state db: %w", err)
	}
	if err := os.Rename(tmp, f.path); err != nil {
		// Keep serving the old state rather than none.
		if oerr := f.open(); oerr != nil {
			panic(fmt.Sprintf("raftstore: reopen state db after failed restore: %v", oerr))
		}
		return fmt.Errorf("install snapshot: %w", err)
	}
	syncDir(filepath.Dir(f.path))
	if err := f.open(); err != nil {
		panic(fmt.Sprintf("raftstore: open restored state db: %v", err))
	}
	f.restores.Add(1)
	f.applier.Applied(hdr.AppliedIndex)
	return nil
}

func (f *fsm) view(fn func(tx *bolt.Tx) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.db.View(fn)
}

// close syncs and closes the state file and removes the open marker.
func (f *fsm) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.db.Sync()
	if cerr := f.db.Close(); err == nil {
		err = cerr
	}
	f.release(err == nil)
	return err
}

type fsmSnapshot struct {
	db     *bolt.DB
	tx     *bolt.Tx
	schema uint32
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	// The log up to this snapshot may be compacted once it is stored; the
	// state file is synced too, and a failing disk fails the snapshot.
	if err := s.db.Sync(); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("sync state db: %w", err)
	}
	if _, err := writeSnapshot(sink, s.tx, s.schema); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() { _ = s.tx.Rollback() }

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
