package server

import (
	"fmt"
	"runtime/debug"
	"strconv"
)

// DefaultGCPercent is the garbage collector target baldurd runs with when
// the GOGC environment variable is not set: Go's own 100 (collect each time
// the heap doubles). A node's live heap is mostly per-connection buffers
// (state lives in bbolt's mmap): at 1,000 SDK instances per node GOGC=400
// held ~160 KiB of RSS per watch stream, GOGC=100 ~80 KiB, with no CPU
// difference the fleet simulator could see (docs/benchmarks.md, "Fleet
// scale"). A write-heavy cluster with few connections may set GOGC=400 to
// spend less CPU on the write path's garbage. GOGC and GOMEMLIMIT keep
// their usual meaning and take precedence.
const DefaultGCPercent = 100

// DefaultMemoryLimit is the soft limit on the Go heap and runtime memory
// baldurd runs with when GOMEMLIMIT is not set: below it the collector
// runs at DefaultGCPercent; as the heap nears it (thousands of SDK
// connections, say) it collects sooner instead of letting the process
// pass 1 GiB. bbolt's mmap is not Go memory and does not
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
