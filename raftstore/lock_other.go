//go:build !unix

package raftstore

import "os"

// lockFile is a no-op where flock is not available; bbolt's own lock on
// state.db still refuses a second process.
func lockFile(*os.File) error { return nil }
