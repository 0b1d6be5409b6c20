package raftstore

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
)

// BenchmarkLogStore measures the candidate Raft log stores on this disk,
// with fsync, as the leader uses them: StoreLogs of a batch of entries.
// The figures behind the choice of raft-boltdb are in docs/benchmarks.md.
func BenchmarkLogStore(b *testing.B) {
	stores := map[string]func(dir string) (raft.LogStore, func()){
		"boltdb": func(dir string) (raft.LogStore, func()) {
			s, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db"), BoltOptions: boltOptions()})
			if err != nil {
				b.Fatal(err)
			}
			return s, func() { s.Close() }
		},
		"wal": func(dir string) (raft.LogStore, func()) {
			w, err := wal.Open(dir)
			if err != nil {
				b.Fatal(err)
			}
			return w, func() { w.Close() }
		},
	}
	for _, name := range []string{"boltdb", "wal"} {
		for _, batch := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/batch=%d", name, batch), func(b *testing.B) {
				store, closeFn := stores[name](b.TempDir())
				defer closeFn()
				data := make([]byte, 512)
				next := uint64(1)
				logs := make([]*raft.Log, batch)
				b.SetBytes(int64(batch * len(data)))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					for j := range logs {
						logs[j] = &raft.Log{Index: next, Term: 1, Type: raft.LogCommand, Data: data}
						next++
					}
					if err := store.StoreLogs(logs); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "entries/s")
			})
		}
	}
}
