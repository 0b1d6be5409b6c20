package server

import (
	"runtime/debug"
	"strconv"
)

// DefaultGCPercent is the garbage collector target baldurd runs with when
// the GOGC environment variable is not set. Go's default of 100 collects
// each time the heap doubles; baldurd's live heap is small (state lives in
// bbolt's mmap, not on the Go heap) and its write path allocates per
// request, so collecting at 5× the live heap trades a few MiB of memory for
// CPU that would otherwise go to the collector (see docs/benchmarks.md,
// "DLQ"). GOGC and GOMEMLIMIT keep their usual meaning and take precedence.
const DefaultGCPercent = 400

// TuneGC sets the collector target to DefaultGCPercent unless GOGC is set
// in the environment (looked up with lookup). It returns the percentage in
// effect, for the start-up log.
func TuneGC(lookup func(string) (string, bool)) string {
	if v, ok := lookup("GOGC"); ok {
		return v
	}
	debug.SetGCPercent(DefaultGCPercent)
	return strconv.Itoa(DefaultGCPercent)
}
