package raftstore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
)

// Recover rewrites the Raft configuration of a stopped node that lost its
// quorum (say two of three nodes are gone for good): the state is restored
// from the node's latest snapshot and log, a new snapshot is taken, and the
// configuration becomes servers. Start the node (and any node listed with
// it, each recovered with the same list) afterwards; it elects a leader
// among servers alone. Writes acknowledged by the lost quorum but not
// stored on this node are lost: recover the member with the newest log.
// The node must not be running (its files are locked).
func Recover(cfg Config, servers []Server) error {
	if cfg.NodeID == "" || cfg.Dir == "" || cfg.Applier == nil {
		return errors.New("raftstore: NodeID, Dir and Applier are required")
	}
	if len(servers) == 0 {
		return errors.New("raftstore: recover needs the servers of the new configuration")
	}
	found := false
	conf := raft.Configuration{}
	for _, sv := range servers {
		found = found || sv.ID == cfg.NodeID
		suff := raft.Voter
		if !sv.Voter {
			suff = raft.Nonvoter
		}
		conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(sv.ID), Address: raft.ServerAddress(sv.Address), Suffrage: suff})
	}
	if !found {
		return fmt.Errorf("raftstore: the new configuration does not list this node (%s)", cfg.NodeID)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	raftDir := filepath.Join(cfg.Dir, "raft")
	if _, err := os.Stat(filepath.Join(raftDir, "wal")); err != nil {
		return fmt.Errorf("no Raft log under %s: %w", raftDir, err)
	}
	f, err := openFSM(filepath.Join(cfg.Dir, "state.db"), cfg.Buckets, cfg.SchemaVersion, cfg.Applier)
	if err != nil {
		return err
	}
	defer f.close()
	logs, err := wal.Open(filepath.Join(raftDir, "wal"))
	if err != nil {
		return fmt.Errorf("open raft log: %w", err)
	}
	defer logs.Close()
	hlog := newHCLogger(cfg.Logger)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(raftDir, 2, hlog)
	if err != nil {
		return fmt.Errorf("open snapshot store: %w", err)
	}
	_, trans := raft.NewInmemTransport(raft.ServerAddress(cfg.NodeID))
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hlog
	if err := raft.RecoverCluster(rc, releasingFSM{f}, logs, logs, snaps, trans, conf); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	return nil
}

// releasingFSM releases the snapshot RecoverCluster takes once it is
// persisted: RecoverCluster never calls Release, and the pinned read
// transaction would keep the state file from closing.
type releasingFSM struct{ *fsm }

func (r releasingFSM) Snapshot() (raft.FSMSnapshot, error) {
	s, err := r.fsm.Snapshot()
	if err != nil {
		return nil, err
	}
	return &releasingSnapshot{FSMSnapshot: s}, nil
}

type releasingSnapshot struct {
	raft.FSMSnapshot
	once sync.Once
}

func (s *releasingSnapshot) Persist(sink raft.SnapshotSink) error {
	defer s.Release()
	return s.FSMSnapshot.Persist(sink)
}

func (s *releasingSnapshot) Release() { s.once.Do(s.FSMSnapshot.Release) }
