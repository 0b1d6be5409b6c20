package server

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/baldurhq/baldurd/raftstore"
)

// Recover rewrites a stopped node's Raft configuration to cfg.Peers after
// the cluster lost its quorum for good (`baldurd recover`; the runbook is in
// docs/operations.md). The node's state is rebuilt from its snapshot and
// log first, with the same audit key, so nothing it holds is lost.
func Recover(cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	peers, err := cfg.PeerList()
	if err != nil {
		return err
	}
	if len(peers) == 0 {
		return errors.New("--peers names the new configuration: the members that remain (id=raftaddr,...), this node among them")
	}
	var key []byte
	if cfg.AuditKeyFile != "" {
		if key, err = loadAuditKey(cfg.AuditKeyFile); err != nil {
			return fmt.Errorf("--audit-key-file: %w", err)
		}
	}
	app := &applier{auditKey: key, log: log}
	return raftstore.Recover(raftstore.Config{NodeID: cfg.NodeID, Dir: cfg.DataDir, Buckets: schemaBuckets(), SchemaVersion: SchemaVersion,
		Applier: app, Logger: log}, peers)
}
