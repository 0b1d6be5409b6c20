package server_test

import (
	"math"
	"runtime/debug"
	"testing"

	"github.com/baldurhq/baldurd/server"
)

// Without GOGC and GOMEMLIMIT baldurd collects at 100 % and under a 1 GiB
// soft limit; either variable set leaves that setting alone.
func TestTuneGCDefaultsAndEnvironment(t *testing.T) {
	gc, limit := debug.SetGCPercent(300), debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() { debug.SetGCPercent(gc); debug.SetMemoryLimit(limit) })

	got := server.TuneGC(func(string) (string, bool) { return "", false })
	if p := debug.SetGCPercent(300); p != server.DefaultGCPercent {
		t.Fatalf("GC percent %d, want %d", p, server.DefaultGCPercent)
	}
	if l := debug.SetMemoryLimit(math.MaxInt64); l != server.DefaultMemoryLimit {
		t.Fatalf("memory limit %d, want %d", l, server.DefaultMemoryLimit)
	}
	if got != "gogc=100 gomemlimit=1GiB" {
		t.Fatalf("reported %q", got)
	}

	env := map[string]string{"GOGC": "150", "GOMEMLIMIT": "2GiB"}
	got = server.TuneGC(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if p := debug.SetGCPercent(300); p != 300 {
		t.Fatalf("GOGC set, yet the GC percent became %d", p)
	}
	if l := debug.SetMemoryLimit(math.MaxInt64); l != math.MaxInt64 {
		t.Fatalf("GOMEMLIMIT set, yet the limit became %d", l)
	}
	if got != "gogc=150 gomemlimit=2GiB" {
		t.Fatalf("reported %q", got)
	}
}
