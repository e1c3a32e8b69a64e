package swarm_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/idepool/idepool"
	idepoolclient "github.com/idepool/idepool/client"
	"github.com/idepool/idepool/internal/quantile"
)

// BenchmarkBurstSwarm is the smaller classroom minute on the real engine:
// 30 starts within 2 s against a warm pool of 5, with room for 32 live
// containers (maxContainers), once with the admission queue and once
// without. It prints errors and the time to ready (POST ?wait=ready until
// the answer), p50/p95/p99. Run with -benchtime 1x.
func BenchmarkBurstSwarm(b *testing.B) {
	const (
		starts = 30
		pool   = 5
		spread = 2 * time.Second
	)
	for _, queue := range []bool{true, false} {
		b.Run(fmt.Sprintf("queue=%v", queue), func(b *testing.B) {
			for b.Loop() {
				s := newStack(b, stackOptions{poolTarget: pool, profile: `"maxContainers": 32`,
					env: map[string]string{"QUEUE_ENABLED": fmt.Sprint(queue), "RATE_LIMIT_REQUESTS": "0"}})
				s.waitPool(idepool.DefaultProfile, pool, 5*time.Minute)
				lat := make([]time.Duration, starts)
				errs := make([]error, starts)
				var wg sync.WaitGroup
				t0 := time.Now()
				for i := range starts {
					wg.Add(1)
					go func() {
						defer wg.Done()
						time.Sleep(spread * time.Duration(i) / starts)
						st := time.Now()
						res, err := s.api.Start(context.Background(), idepoolclient.StartRequest{
							Bucket: bucket, Prefix: fmt.Sprintf("burst-%02d", i), UserID: fmt.Sprintf("s%02d", i),
							Wait: true, WaitTimeout: 4 * time.Minute})
						if err == nil && !res.Ready {
							err = fmt.Errorf("answered %d, not ready", res.HTTPStatus)
						}
						lat[i], errs[i] = time.Since(st), err
					}()
				}
				wg.Wait()
				wall := time.Since(t0)
				b.StopTimer()
				var ok []time.Duration
				kinds := map[string]int{}
				for i, err := range errs {
					if err != nil {
						var ce *idepoolclient.Error
						if errors.As(err, &ce) {
							kinds[string(ce.Code)]++
						} else {
							kinds[err.Error()]++
						}
						continue
					}
					ok = append(ok, lat[i])
				}
				sort.Slice(ok, func(i, j int) bool { return ok[i] < ok[j] })
				q := func(f float64) time.Duration { return quantile.Sorted(ok, f) }
				b.ReportMetric(float64(starts-len(ok)), "errors")
				b.ReportMetric(q(0.5).Seconds(), "p50-s")
				b.ReportMetric(q(0.95).Seconds(), "p95-s")
				b.ReportMetric(q(0.99).Seconds(), "p99-s")
				b.Logf("queue=%v: %d starts over %v against a pool of %d (room for 32): %d errors %v; time to ready p50 %v p95 %v p99 %v; all answered in %v",
					queue, starts, spread, pool, starts-len(ok), kinds, q(0.5).Round(time.Millisecond), q(0.95).Round(time.Millisecond),
					q(0.99).Round(time.Millisecond), wall.Round(time.Millisecond))
				b.StartTimer()
			}
		})
	}
}
