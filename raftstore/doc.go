// Package raftstore runs a hashicorp/raft node whose finite-state machine is a
// bbolt file, and knows nothing about the domains stored in it.
//
// The FSM applies each batch of committed entries in one bbolt write
// transaction and stores the applied index in that same transaction; entries
// at or below the stored index are skipped, because raft re-applies every
// entry after the last snapshot when a node restarts. What an entry means is
// decided by the [Applier] the caller supplies (server/apply.go).
//
// Snapshots are a header (format, schema version, applied index, size,
// SHA-256) followed by a consistent copy of the bbolt file. A restore
// verifies the header and checksum into a temporary file before it swaps the
// state file, so a corrupt snapshot changes nothing.
//
// Only the server package imports raftstore.
package raftstore
