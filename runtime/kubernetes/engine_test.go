package kubernetes

import (
	"context"
	"testing"
	"time"

	"github.com/idepool/idepool"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A Pod replaced by another of the same name (here: another deployment's
// container with the same id, after ours was deleted behind the runtime's
// back) is never written through the UID the runtime remembered: SetLabels
// says not found and the other Pod keeps its annotations.
func TestSetLabelsAfterReplace(t *testing.T) {
	e := newEnv(t)
	a, _ := e.runtime(t, newDeployment())
	b, _ := e.runtime(t, newDeployment())
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	spec := idepool.ContainerSpec{ID: idepool.NewID(), Profile: testProfile(), Labels: map[string]string{"k": "a"}}
	if _, err := a.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := a.SetLabels(ctx, spec.ID, map[string]string{"k": "a2"}); err != nil {
		t.Fatalf("SetLabels: %v", err)
	}
	zero := int64(0)
	if err := e.cl.Client.CoreV1().Pods(e.ns).Delete(ctx, PodName(spec.ID), metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := e.cl.Client.CoreV1().Pods(e.ns).Get(ctx, PodName(spec.ID), metav1.GetOptions{}); err != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	spec.Labels = map[string]string{"k": "b"}
	if _, err := b.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := a.SetLabels(ctx, spec.ID, map[string]string{"k": "forged"}); idepool.ErrorCode(err) != idepool.ENotFound {
		t.Errorf("SetLabels on the replaced pod: %v, want %s", err, idepool.ENotFound)
	}
	got, err := b.Inspect(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Labels["k"] != "b" {
		t.Errorf("the other deployment's pod has k=%q after the refused SetLabels, want b", got.Labels["k"])
	}
	if err := b.Remove(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
}
