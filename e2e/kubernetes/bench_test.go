//go:build kubernetes

package kubernetes_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idepool/idepool"
	idepoolclient "github.com/idepool/idepool/client"
	"github.com/idepool/idepool/internal/e2etest"
	"github.com/idepool/idepool/internal/quantile"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func benchN(def int) int {
	if v, err := strconv.Atoi(os.Getenv("IDEPOOL_BENCH_N")); err == nil && v > 0 {
		return v
	}
	return def
}

// pct is the p-quantile of d (nearest rank: of 100, p99 is the 99th).
func pct(d []time.Duration, p float64) time.Duration { return quantile.Of(d, p) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkKubernetesColdClaim: a claim with an empty pool (a cold create:
// pod, image, agent, readiness) against a raw pod of the same image and
// resources created straight through the API until it is Running, on the
// same cluster, alternately. Reports both medians and their ratio (the
// goal: at most 1.1).
func BenchmarkKubernetesColdClaim(b *testing.B) {
	s := newStack(b, stackOptions{poolTarget: 0})
	n := benchN(8)
	var ours, raw []time.Duration
	run := idepool.NewID()[:6]
	for b.Loop() {
		for i := range n {
			// Raw: a pod of the IDE image with the IDE's resources.
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			d, err := s.rawPod(ctx, fmt.Sprintf("raw-%s-%d", run, i))
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			raw = append(raw, d)

			ctx, cancel = context.WithTimeout(context.Background(), 3*time.Minute)
			start := time.Now()
			res, err := s.api.Start(ctx, idepoolclient.StartRequest{Bucket: bucket, Prefix: fmt.Sprintf("cold-%s-%d", run, i), Wait: true, WaitTimeout: 2 * time.Minute})
			d = time.Since(start)
			if err != nil || !res.Ready {
				cancel()
				b.Fatalf("cold start: %+v, %v\n%s", res, err, s.logs())
			}
			if res.IsPreWarmed {
				b.Fatalf("cold start got a warm container: %+v", res)
			}
			ours = append(ours, d)
			if _, err := s.api.Stop(ctx, res.ID); err != nil {
				b.Fatalf("stop: %v", err)
			}
			cancel()
		}
	}
	mo, mr := pct(ours, 0.5), pct(raw, 0.5)
	b.ReportMetric(ms(mo), "cold-claim-p50-ms")
	b.ReportMetric(ms(mr), "raw-pod-running-p50-ms")
	b.ReportMetric(float64(mo)/float64(mr), "ratio")
	b.Logf("cold claim create→ready p50 %v p90 %v; raw pod create→Running p50 %v p90 %v; ratio of medians %.2f (n=%d each)",
		mo.Round(time.Millisecond), pct(ours, 0.9).Round(time.Millisecond), mr.Round(time.Millisecond), pct(raw, 0.9).Round(time.Millisecond),
		float64(mo)/float64(mr), len(ours))
}

// rawPod creates a pod of the IDE image with the IDE's resources and waits
// until it is Running, then deletes it; returns create → Running.
func (s *stack) rawPod(ctx context.Context, name string) (time.Duration, error) {
	pods := s.cl.Client.CoreV1().Pods(s.ns)
	no := false
	grace := int64(0)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"idepool.bench": "raw"}},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "ide", Image: ideImage, ImagePullPolicy: corev1.PullIfNotPresent,
				// The agent with no orchestrator to reach: it runs (and
				// retries) until deleted. Its id must be a container id
				// (not the pod's name), or it exits at once and the pod
				// can go straight to Failed, never seen Running.
				Env: []corev1.EnvVar{{Name: "IDEPOOL_AGENT_URL", Value: "http://127.0.0.1:9"}, {Name: "IDEPOOL_AGENT_TOKEN", Value: "x"}, {Name: "IDEPOOL_CONTAINER_ID", Value: idepool.NewID()}},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("96Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("96Mi")},
				},
			}},
		},
	}
	start := time.Now()
	created, err := pods.Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return 0, fmt.Errorf("create raw pod: %w", err)
	}
	defer pods.Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
	w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name, ResourceVersion: created.ResourceVersion})
	if err != nil {
		return 0, fmt.Errorf("watch raw pod: %w", err)
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		if p, ok := ev.Object.(*corev1.Pod); ok && p.Status.Phase == corev1.PodRunning {
			return time.Since(start), nil
		}
	}
	return 0, fmt.Errorf("raw pod %s: watch ended before Running: %w", name, ctx.Err())
}

// waveSize is the warm-claim benchmark's pool: the profile wave keeps
// waveSize warm and has at most waveSize containers (maxContainers), so
// nothing is created while a wave of claims is timed.
const waveSize = 34

// BenchmarkKubernetesWarmClaim: warm claims, each timed from the POST to
// the first byte of its /code/<id>/ URL, the one-time token swapped for a
// cookie as a browser does, alternately through idepool's built-in router
// and through Traefik (the chart's, its Kubernetes Ingress provider routing
// to the pod, ForwardAuth asking idepool). In waves of waveSize, as
// e2e/cluster's BenchmarkClusterClaimFirstByte: the pool full before each
// (untimed), nothing created during it, the claimed containers stopped
// after it (untimed). p50 and p99 per router (the goal: p99 under 100 ms).
func BenchmarkKubernetesWarmClaim(b *testing.B) {
	n := benchN(204) // in all, half through each router
	wave := fmt.Sprintf(`,
	  {"name": "wave", "image": %q, "cpuLimit": 1, "cpuReservation": 0.01, "memoryLimit": "96MiB", "memoryReservation": "32MiB", "poolTarget": %d, "maxContainers": %d}`,
		ideImage, waveSize, waveSize)
	s := newStack(b, stackOptions{poolTarget: 0, chart: true, traefik: true, profiles: wave})
	routers := []struct{ name, base string }{{"builtin", s.apiURL}, {"traefik", s.traefikURL}}
	// One transport per router, its connections kept as a browser's are.
	tr := map[string]*http.Transport{}
	for _, r := range routers {
		tr[r.name] = &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute}
	}
	claims := map[string][]claimTiming{}
	retried := map[string]int{}
	run := idepool.NewID()[:6]
	for b.Loop() {
		for done := 0; done < n; {
			t0 := time.Now()
			s.waitPool("wave", waveSize, 5*time.Minute)
			b.Logf("wave %d: %d warm in %.1f s", done/waveSize+1, waveSize, time.Since(t0).Seconds())
			var ids []string
			last := map[string]string{} // router → the URL and cookie of its last claim
			for k := 0; k < min(waveSize, n-done); k++ {
				i := done + k
				r := routers[i%2]
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				var ct claimTiming
				// The environment's own noise: a request through the same
				// router to a container claimed before (nothing claimed).
				if l := last[r.name]; l != "" {
					u, cookie, _ := strings.Cut(l, " ")
					st, _, d, err := e2etest.HTTPGet(&http.Client{Transport: tr[r.name], Timeout: 30 * time.Second}, u, cookie)
					if err != nil || st != http.StatusOK {
						cancel()
						b.Fatalf("steady GET %s: %d %v", u, st, err)
					}
					ct.steady = d
				}
				jar, _ := cookiejar.New(nil)
				hc := &http.Client{Transport: tr[r.name], Jar: jar, Timeout: 30 * time.Second,
					CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
				start := time.Now()
				res, err := s.api.Start(ctx, idepoolclient.StartRequest{Bucket: bucket, Prefix: fmt.Sprintf("warm-%s-%d", run, i), Profile: "wave", UserID: fmt.Sprintf("u-%s-%d", run, i)})
				ct.post = time.Since(start)
				if err != nil {
					cancel()
					b.Fatalf("start: %v\n%s", err, s.logs())
				}
				ids = append(ids, res.ID)
				if !res.IsPreWarmed {
					cancel()
					b.Fatalf("claim %d was not warm: %+v", i, res)
				}
				// The token's redirect (its cookie), then the IDE's answer,
				// each timed to its first byte.
				u := r.base + strings.TrimPrefix(res.URLs.CodeServer, s.apiURL)
				for hop := 0; ; hop++ {
					st, body, d, err := e2etest.HTTPGet(hc, u, "")
					if err != nil {
						cancel()
						b.Fatalf("claim %d through %s: %v", i, r.name, err)
					}
					if st == http.StatusServiceUnavailable && strings.Contains(body, "no endpoint yet") && hop < 500 {
						retried[r.name]++
						time.Sleep(20 * time.Millisecond)
						continue
					}
					if hop == 0 && st == http.StatusFound {
						ct.exchange = time.Since(start) - ct.post
						// The cookie is in the jar; on to the clean URL.
						u = r.base + "/code/" + res.ID + "/"
						continue
					}
					if st != http.StatusOK {
						cancel()
						b.Fatalf("claim %d through %s: %d\n%s", i, r.name, st, body)
					}
					ct.ide = d
					break
				}
				ct.total = time.Since(start)
				cancel()
				claims[r.name] = append(claims[r.name], ct)
				pu, _ := url.Parse(r.base)
				for _, c := range jar.Cookies(pu) {
					if c.Name == "idepool_"+res.ID {
						last[r.name] = r.base + "/code/" + res.ID + "/ " + c.String()
					}
				}
			}
			done += len(ids)
			t0 = time.Now()
			s.stopAll(ids)
			b.Logf("wave stopped in %.1f s", time.Since(t0).Seconds())
		}
	}
	var posts []time.Duration
	for _, r := range routers {
		cs := claims[r.name]
		col := func(f func(claimTiming) time.Duration) []time.Duration {
			out := make([]time.Duration, 0, len(cs))
			for _, c := range cs {
				if d := f(c); d > 0 {
					out = append(out, d)
				}
			}
			return out
		}
		l := col(func(c claimTiming) time.Duration { return c.total })
		p := col(func(c claimTiming) time.Duration { return c.post })
		ex := col(func(c claimTiming) time.Duration { return c.exchange })
		ide := col(func(c claimTiming) time.Duration { return c.ide })
		steady := col(func(c claimTiming) time.Duration { return c.steady })
		posts = append(posts, p...)
		b.ReportMetric(ms(pct(l, 0.5)), "p50-ms-"+r.name)
		b.ReportMetric(ms(pct(l, 0.99)), "p99-ms-"+r.name)
		b.Logf("warm claim → first byte through %s: p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms (n=%d; %d answers 503 no endpoint yet)",
			r.name, ms(pct(l, 0.5)), ms(pct(l, 0.9)), ms(pct(l, 0.99)), ms(pct(l, 1)), len(l), retried[r.name])
		b.Logf("  its parts, p50 / p99 / max: POST %.1f / %.1f / %.1f ms; token → cookie %.1f / %.1f / %.1f ms; the IDE's first byte %.1f / %.1f / %.1f ms; a request to an earlier claim's IDE just before (the machine's noise) %.1f / %.1f / %.1f ms",
			ms(pct(p, 0.5)), ms(pct(p, 0.99)), ms(pct(p, 1)), ms(pct(ex, 0.5)), ms(pct(ex, 0.99)), ms(pct(ex, 1)),
			ms(pct(ide, 0.5)), ms(pct(ide, 0.99)), ms(pct(ide, 1)), ms(pct(steady, 0.5)), ms(pct(steady, 0.99)), ms(pct(steady, 1)))
		slow := slices.Clone(cs)
		slices.SortFunc(slow, func(a, b claimTiming) int { return int(b.total - a.total) })
		for _, c := range slow[:min(3, len(slow))] {
			b.Logf("  slow: %.1f ms = POST %.1f + token %.1f + IDE %.1f ms (the request before it: %.1f ms)", ms(c.total), ms(c.post), ms(c.exchange), ms(c.ide), ms(c.steady))
		}
	}
	b.ReportMetric(ms(pct(posts, 0.5)), "p50-ms-post")
	b.ReportMetric(ms(pct(posts, 0.99)), "p99-ms-post")
}

// claimTiming is one warm claim's time to its IDE's first byte and its
// parts: the POST, the token's redirect (to its first byte), the IDE's
// answer (to its first byte); steady is a request to an earlier claim's
// IDE through the same router just before, the environment's noise.
type claimTiming struct {
	total, post, exchange, ide, steady time.Duration
}

// stopAll stops containers, a wave at a time (a stop waits for the
// kubelet to end the pod: seconds, mostly waiting).
func (s *stack) stopAll(ids []string) {
	s.t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, waveSize)
	errs := make([]error, len(ids))
	for i, id := range ids {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if _, err := s.api.Stop(ctx, id); err != nil {
				errs[i] = fmt.Errorf("stop %s: %w", id, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		s.t.Fatal(err)
	}
}
