//go:build kubernetes

package kubernetes_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idepool/idepool"
	idepoolclient "github.com/idepool/idepool/client"
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

func pct(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	i := int(float64(len(s)-1)*p + 0.5)
	return s[i]
}

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
				// retries) until deleted.
				Env: []corev1.EnvVar{{Name: "IDEPOOL_AGENT_URL", Value: "http://127.0.0.1:9"}, {Name: "IDEPOOL_AGENT_TOKEN", Value: "x"}, {Name: "IDEPOOL_CONTAINER_ID", Value: name}},
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
	lat := map[string][]time.Duration{}
	posts := map[string][]time.Duration{}
	retried := map[string]int{}
	run := idepool.NewID()[:6]
	for b.Loop() {
		for done := 0; done < n; {
			t0 := time.Now()
			s.waitPool("wave", waveSize, 5*time.Minute)
			b.Logf("wave %d: %d warm in %.1f s", done/waveSize+1, waveSize, time.Since(t0).Seconds())
			var ids []string
			for k := 0; k < min(waveSize, n-done); k++ {
				i := done + k
				r := routers[i%2]
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				jar, _ := cookiejar.New(nil)
				hc := &http.Client{Transport: tr[r.name], Jar: jar, Timeout: 30 * time.Second}
				start := time.Now()
				res, err := s.api.Start(ctx, idepoolclient.StartRequest{Bucket: bucket, Prefix: fmt.Sprintf("warm-%s-%d", run, i), Profile: "wave", UserID: fmt.Sprintf("u-%s-%d", run, i)})
				posted := time.Since(start)
				if err != nil {
					cancel()
					b.Fatalf("start: %v\n%s", err, s.logs())
				}
				ids = append(ids, res.ID)
				if !res.IsPreWarmed {
					cancel()
					b.Fatalf("claim %d was not warm: %+v", i, res)
				}
				st, body, _, retries, err := firstByte(hc, r.base+strings.TrimPrefix(res.URLs.CodeServer, s.apiURL), "")
				d := time.Since(start)
				cancel()
				if err != nil || st != http.StatusOK {
					b.Fatalf("first byte through %s: %d %v\n%s", r.name, st, err, body)
				}
				lat[r.name] = append(lat[r.name], d)
				posts[r.name] = append(posts[r.name], posted)
				if retries > 0 {
					retried[r.name]++
				}
			}
			done += len(ids)
			t0 = time.Now()
			s.stopAll(ids)
			b.Logf("wave stopped in %.1f s", time.Since(t0).Seconds())
		}
	}
	var all []time.Duration
	for _, r := range routers {
		l, p := lat[r.name], posts[r.name]
		all = append(all, p...)
		b.ReportMetric(ms(pct(l, 0.5)), "p50-ms-"+r.name)
		b.ReportMetric(ms(pct(l, 0.99)), "p99-ms-"+r.name)
		b.Logf("warm claim → first byte through %s: p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms (n=%d; %d waited on 503 no endpoint yet); its POSTs: p50 %.1f ms, p99 %.1f ms",
			r.name, ms(pct(l, 0.5)), ms(pct(l, 0.9)), ms(pct(l, 0.99)), ms(pct(l, 1)), len(l), retried[r.name], ms(pct(p, 0.5)), ms(pct(p, 0.99)))
	}
	b.ReportMetric(ms(pct(all, 0.5)), "p50-ms-post")
	b.ReportMetric(ms(pct(all, 0.99)), "p99-ms-post")
}

// stopAll stops containers, 8 at a time.
func (s *stack) stopAll(ids []string) {
	s.t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
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
