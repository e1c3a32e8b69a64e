//go:build kubernetes

package kubernetes_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"os"
	"slices"
	"strconv"
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

// BenchmarkKubernetesWarmClaim: a claim from the warm pool, then the first
// byte of its /code/ URL through the built-in router (token exchange
// included), as a user's browser would see it. p50 and p99 (the goal: p99
// under 100 ms).
func BenchmarkKubernetesWarmClaim(b *testing.B) {
	const pool = 4
	s := newStack(b, stackOptions{poolTarget: pool})
	s.waitPool(idepool.DefaultProfile, pool, 5*time.Minute)
	n := benchN(24)
	var lat, posts, known []time.Duration // known: claims whose pod address the pool knew
	retried := 0
	run := idepool.NewID()[:6]
	for b.Loop() {
		for i := range n {
			s.waitPool(idepool.DefaultProfile, 1, 3*time.Minute)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			jar, _ := cookiejar.New(nil)
			hc := &http.Client{Jar: jar, Timeout: 30 * time.Second}
			start := time.Now()
			res, err := s.api.Start(ctx, idepoolclient.StartRequest{Bucket: bucket, Prefix: fmt.Sprintf("warm-%s-%d", run, i)})
			if err != nil {
				cancel()
				b.Fatalf("start: %v", err)
			}
			posts = append(posts, time.Since(start))
			st, body, _, retries, err := firstByte(hc, res.URLs.CodeServer, "")
			d := time.Since(start)
			if retries > 0 {
				retried++
			} else {
				known = append(known, d)
			}
			if err != nil || st != http.StatusOK {
				cancel()
				b.Fatalf("first byte: %d %v\n%s", st, err, body)
			}
			if !res.IsPreWarmed {
				b.Logf("claim %d was not warm (%s): counted anyway", i, res.Claim)
			}
			lat = append(lat, d)
			// Stop in the background: the next claim does not wait for
			// this one's flush.
			go func() {
				defer cancel()
				s.api.Stop(ctx, res.ID)
			}()
		}
	}
	b.ReportMetric(ms(pct(lat, 0.5)), "warm-claim-first-byte-p50-ms")
	b.ReportMetric(ms(pct(lat, 0.99)), "warm-claim-first-byte-p99-ms")
	b.Logf("warm claim → first byte through the built-in router: p50 %v p90 %v p99 %v max %v (n=%d; %d claimed a container whose pod address the pool did not know yet and waited on 503s)",
		pct(lat, 0.5).Round(time.Microsecond), pct(lat, 0.9).Round(time.Microsecond), pct(lat, 0.99).Round(time.Microsecond),
		slices.Max(lat).Round(time.Microsecond), len(lat), retried)
	b.Logf("the POST alone: p50 %v p99 %v; claims of pods whose address the pool knew: p50 %v p99 %v (n=%d)",
		pct(posts, 0.5).Round(time.Microsecond), pct(posts, 0.99).Round(time.Microsecond),
		pct(known, 0.5).Round(time.Microsecond), pct(known, 0.99).Round(time.Microsecond), len(known))
	b.ReportMetric(ms(pct(posts, 0.5)), "post-p50-ms")
}
