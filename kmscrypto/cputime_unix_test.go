//go:build unix

package kmscrypto_test

import (
	"syscall"
	"testing"
	"time"
)

// processCPU is the CPU time (user and system) the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU, called just before a benchmark's loop and deferred, adds the
// metric cpu-ns/op: the process's CPU time per iteration, garbage
// collection included. Run with -cpu 1 so that nothing else runs in the
// process meanwhile; on a machine shared with other work it is far
// steadier than ns/op, which counts the time other processes hold the
// cores.
func reportCPU(b *testing.B) func() {
	start := processCPU()
	return func() {
		if b.N > 0 && start > 0 {
			b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/op")
		}
	}
}
