package server

import (
	"fmt"
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

// DefaultMemoryLimit is the soft limit on the Go heap and runtime memory
// baldurd runs with when GOMEMLIMIT is not set: below it the collector
// runs at DefaultGCPercent; as the heap nears it (thousands of SDK
// connections, say: each holds ~100 KiB of live buffers, and 5× that
// before a collection at GOGC=400) it collects sooner instead of letting
// the process pass 1 GiB. bbolt's mmap is not Go memory and does not
// count. Set GOMEMLIMIT to the container's memory less some headroom.
const DefaultMemoryLimit = 1 << 30

// TuneGC sets the collector target to DefaultGCPercent unless GOGC is set,
// and the soft memory limit to DefaultMemoryLimit unless GOMEMLIMIT is set,
// in the environment (looked up with lookup). It returns what is in
// effect, for the start-up log.
func TuneGC(lookup func(string) (string, bool)) string {
	gogc, ok := lookup("GOGC")
	if !ok {
		debug.SetGCPercent(DefaultGCPercent)
		gogc = strconv.Itoa(DefaultGCPercent)
	}
	limit, ok := lookup("GOMEMLIMIT")
	if !ok {
		debug.SetMemoryLimit(DefaultMemoryLimit)
		limit = "1GiB"
	}
	return fmt.Sprintf("gogc=%s gomemlimit=%s", gogc, limit)
}
