// Package quantile computes the percentiles the benchmarks print, one way
// for all of them, so that a p99 here means what a p99 there means.
package quantile

import (
	"math"
	"slices"
	"time"
)

// Of returns the q-quantile (0 ≤ q ≤ 1) of d by the nearest-rank method:
// the smallest value at least a share q of the samples are not above, i.e.
// the ⌈q·n⌉-th smallest (the first for q = 0). Of 100 samples p99 is the
// 99th, not the largest; p50 the 50th. d is not changed; empty: 0.
func Of(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return sorted(s, q)
}

// Sorted is Of for d already sorted ascending (no copy).
func Sorted(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return sorted(d, q)
}

func sorted(s []time.Duration, q float64) time.Duration {
	// The small epsilon keeps q·n that floats put a hair above an integer
	// (0.29·100 = 29.000000000000004) on that integer.
	rank := int(math.Ceil(q*float64(len(s)) - 1e-9))
	return s[min(max(rank, 1), len(s))-1]
}
