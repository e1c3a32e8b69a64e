package kubernetes

import (
	"context"

	"github.com/idepool/idepool"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// Events streams hints about this deployment's containers until ctx ends.
// Each call runs an informer of its own over the deployment's Pods (a list,
// then a watch; client-go relists when the watch breaks, and resyncs every
// ResyncInterval): an event is sent for a new Pod, for every change of a
// Pod's status, and for a Pod that is gone.
func (r *Runtime) Events(ctx context.Context) <-chan idepool.RuntimeEvent {
	out := make(chan idepool.RuntimeEvent, 64)
	// The informer's handlers never send on out (it is closed when ctx
	// ends, and a handler could still be running then): they queue on evs,
	// which is never closed, and one goroutine forwards.
	evs := make(chan idepool.RuntimeEvent, 256)
	pods := r.c.Pods(r.ns)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = r.selector()
			return pods.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = r.selector()
			return pods.Watch(ctx, o)
		},
	}
	inf := cache.NewSharedIndexInformerWithOptions(lw, &corev1.Pod{}, cache.SharedIndexInformerOptions{ResyncPeriod: r.o.ResyncInterval})
	known := map[string]idepool.RuntimeStatus{} // only touched by the handlers, which run one at a time
	queue := func(ev idepool.RuntimeEvent) {
		select {
		case evs <- ev:
		case <-ctx.Done():
		}
	}
	update := func(obj any) {
		p, ok := obj.(*corev1.Pod)
		if !ok || !r.ours(p) {
			return
		}
		in := r.instance(p)
		if old, seen := known[in.ID]; seen && old == in.Status {
			return
		}
		known[in.ID] = in.Status
		queue(idepool.RuntimeEvent{ID: in.ID, Status: in.Status})
	}
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { update(obj) },
		UpdateFunc: func(_, obj any) { update(obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			p, ok := obj.(*corev1.Pod)
			if !ok || !r.ours(p) {
				return
			}
			id := r.instance(p).ID
			delete(known, id)
			queue(idepool.RuntimeEvent{ID: id, Removed: true})
		},
	})
	if err != nil {
		r.log.Error("events: informer handler", "err", err)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		inf.RunWithContext(ctx)
	}()
	go func() {
		defer close(out)
		// The informer's goroutines have stopped (they stop queueing once
		// ctx is done) before the channel closes.
		defer func() { <-stopped }()
		for {
			select {
			case ev := <-evs:
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}
