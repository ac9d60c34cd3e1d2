// Package cputime measures benchmarks by the process's CPU time instead of
// the wall clock, for a machine shared with other work. It is test support
// for the benchmarks of the root package and of kmscrypto; where
// getrusage is missing (not unix) Process is 0, Report reports nothing and
// Paired skips the benchmark.
package cputime

import (
	"slices"
	"testing"
	"time"
)

// Report, called just before a benchmark's loop and deferred, adds the
// metric cpu-ns/op: the process's CPU time per iteration, garbage
// collection included. Run with -cpu 1 so that nothing else runs in the
// process meanwhile; on a machine shared with other work it is far
// steadier than ns/op, which counts the time other processes hold the
// cores.
func Report(b *testing.B) func() {
	start := Process()
	return func() {
		if b.N > 0 && start > 0 {
			b.ReportMetric(float64(Process()-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

// Paired measures op against raw on a machine shared with other work:
// each iteration of the benchmark loop runs a batch of n calls of each,
// in alternating order, and reads the process's CPU time around every
// batch (with -cpu 1 that is the calls' own time plus the garbage
// collection they cause, and none of the time other processes hold the
// cores). It reports the median CPU time per call of each, op-ns and
// raw-ns, and two ratios: ratio-median (of those medians) and ratio-total
// (of the summed times, which counts every collection in full).
func Paired(b *testing.B, n int, raw, op func()) {
	if !measured {
		b.Skip("needs getrusage")
	}
	var rs, os []float64
	var rSum, oSum time.Duration
	batch := func(f func()) time.Duration {
		t := Process()
		for range n {
			f()
		}
		return Process() - t
	}
	i := 0
	for b.Loop() {
		var r, o time.Duration
		if i%2 == 0 {
			r, o = batch(raw), batch(op)
		} else {
			o, r = batch(op), batch(raw)
		}
		i++
		rs, os = append(rs, float64(r)/float64(n)), append(os, float64(o)/float64(n))
		rSum += r
		oSum += o
	}
	rm, om := median(rs), median(os)
	b.ReportMetric(om, "op-ns")
	b.ReportMetric(rm, "raw-ns")
	b.ReportMetric(om/rm, "ratio-median")
	b.ReportMetric(float64(oSum)/float64(rSum), "ratio-total")
}

func median(xs []float64) float64 {
	slices.Sort(xs)
	if len(xs) == 0 {
		return 0
	}
	return xs[len(xs)/2]
}
