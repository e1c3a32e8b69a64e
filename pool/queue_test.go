package pool

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/runtime/fake"
)

func ws(b string) idepool.Workspace { return idepool.Workspace{Bucket: b} }

func (h *harness) startOrQueue(bucket, user string) (idepool.Claim, *Ticket) {
	h.t.Helper()
	c, t, err := h.m.StartOrQueue(context.Background(), idepool.StartRequest{Workspace: ws(bucket), UserID: user})
	if err != nil {
		h.t.Fatalf("StartOrQueue(%s): %v", bucket, err)
	}
	return c, t
}

func (h *harness) waitTicket(id string) idepool.Claim {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := h.m.WaitTicket(ctx, id)
	if err != nil {
		h.t.Fatalf("WaitTicket(%s): %v", id, err)
	}
	return c
}

// TestQueueServesInOrderAsCapacityFrees: capacity for 3, no pool; the 4th
// to 7th starts wait; each stopped container lets the next one in, first
// come first served, and a ticket says its position.
func TestQueueServesInOrderAsCapacityFrees(t *testing.T) {
	synctest.Test(t, testQueueServesInOrderAsCapacityFrees)
}

func testQueueServesInOrderAsCapacityFrees(t *testing.T) {
	s := setup{profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, 0)}}
	withSlots(&s, 3, func(o *Options) { o.Queue = QueueOptions{Enabled: true} })
	h := newHarness(t, s)
	h.reconcile()
	var running []string
	for i := range 3 {
		c, tk := h.startOrQueue(fmt.Sprintf("first-%d", i), "")
		if tk != nil || c.Kind != idepool.ClaimCold {
			t.Fatalf("start %d: %+v %+v", i, c.Kind, tk)
		}
		running = append(running, c.Container.ID)
	}
	var tickets []*Ticket
	for i := range 4 {
		c, tk := h.startOrQueue(fmt.Sprintf("wait-%d", i), "")
		if tk == nil || c.Container.ID != "" {
			t.Fatalf("start %d not queued: %+v", i, c)
		}
		if tk.Position != i+1 || tk.State != TicketQueued || tk.Estimate <= 0 {
			t.Fatalf("ticket %d: %+v", i, tk)
		}
		tickets = append(tickets, tk)
	}
	// A second start for a waiting workspace gets the same ticket.
	if _, again := h.startOrQueue("wait-2", ""); again == nil || again.ID != tickets[2].ID {
		t.Fatalf("same workspace, other ticket: %+v", again)
	}
	if n := h.events.count(idepool.EventQueued, "queued"); n != 4 {
		t.Fatalf("%d queued events", n)
	}
	h.reconcile() // no capacity: nothing changes
	if tk, _ := h.m.Ticket(tickets[0].ID); tk.State != TicketQueued {
		t.Fatalf("served without capacity: %+v", tk)
	}
	for i := range 4 {
		if _, err := h.m.Stop(context.Background(), running[i%3], idepool.ReasonManual); err != nil {
			t.Fatal(err)
		}
		h.reconcile() // creates one for the head of the queue
		c := h.waitTicket(tickets[i].ID)
		if c.Kind != ClaimQueued || c.Container.Workspace.Bucket != fmt.Sprintf("wait-%d", i) {
			t.Fatalf("ticket %d served %+v", i, c)
		}
		running[i%3] = c.Container.ID
		for j := i + 1; j < 4; j++ {
			tk, err := h.m.Ticket(tickets[j].ID)
			if err != nil || tk.State != TicketQueued || tk.Position != j-i {
				t.Fatalf("after %d served: ticket %d = %+v %v", i, j, tk, err)
			}
		}
		tk, _ := h.m.Ticket(tickets[i].ID)
		if tk.State != TicketAssigned || tk.ContainerID != c.Container.ID {
			t.Fatalf("served ticket: %+v", tk)
		}
		if got, err := h.m.WaitReady(context.Background(), c.Container.ID); err != nil || got.State != idepool.StateRunning {
			t.Fatalf("queued container not running: %+v %v", got.State, err)
		}
	}
	h.m.bg.Wait()
	h.checkNoLeak()
}

func TestQueueFullTimeoutAndCancel(t *testing.T) {
	synctest.Test(t, testQueueFullTimeoutAndCancel)
}

func testQueueFullTimeoutAndCancel(t *testing.T) {
	s := setup{profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, 0)}}
	withSlots(&s, 0, func(o *Options) { o.Queue = QueueOptions{Enabled: true, Limit: 2, Timeout: time.Minute} })
	h := newHarness(t, s)
	_, t1 := h.startOrQueue("a-1", "")
	_, t2 := h.startOrQueue("a-2", "")
	_, _, err := h.m.StartOrQueue(context.Background(), idepool.StartRequest{Workspace: ws("a-3")})
	if idepool.ErrorCode(err) != idepool.EQueueFull {
		t.Fatalf("third start: %v, want QUEUE_FULL", err)
	}
	// A blocking Start whose client leaves cancels its ticket.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	h.m.CancelTicket(t2.ID)
	go func() {
		_, err := h.m.Start(ctx, idepool.StartRequest{Workspace: ws("a-4")})
		done <- err
	}()
	synctest.Wait() // the start is queued and blocked
	if q, _ := h.m.Queue(idepool.DefaultProfile); len(q) != 2 {
		t.Fatalf("queue: %+v", q)
	}
	cancel()
	if err := <-done; idepool.ErrorCode(err) != idepool.EClientClosed {
		t.Fatalf("cancelled start: %v", err)
	}
	if tk, _ := h.m.Ticket(t2.ID); tk.State != TicketCancelled {
		t.Fatalf("cancelled ticket: %+v", tk)
	}
	if q, _ := h.m.Queue(idepool.DefaultProfile); len(q) != 1 || q[0].ID != t1.ID {
		t.Fatalf("queue after cancels: %+v", q)
	}
	// The timeout refuses with a clear reason and frees the workspace.
	time.Sleep(2 * time.Minute)
	h.reconcile()
	_, err = h.m.WaitTicket(context.Background(), t1.ID)
	if idepool.ErrorCode(err) != idepool.ECapacity || idepool.ErrorDetails(err)["reason"] != "queue-timeout" {
		t.Fatalf("timed-out ticket: %v %v", err, idepool.ErrorDetails(err))
	}
	if tk, _ := h.m.Ticket(t1.ID); tk.State != TicketFailed || tk.Code != idepool.ECapacity {
		t.Fatalf("timed-out ticket: %+v", tk)
	}
	if _, again := h.startOrQueue("a-1", ""); again == nil || again.ID == t1.ID {
		t.Fatalf("a new start after the timeout should get a new ticket: %+v", again)
	}
}

func TestQueueOffRefuses(t *testing.T) { synctest.Test(t, testQueueOffRefuses) }

func testQueueOffRefuses(t *testing.T) {
	s := setup{profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, 0)}}
	withSlots(&s, 1, nil)
	h := newHarness(t, s)
	h.start("one")
	_, tk, err := h.m.StartOrQueue(context.Background(), idepool.StartRequest{Workspace: ws("two")})
	if tk != nil || idepool.ErrorCode(err) != idepool.ECapacity {
		t.Fatalf("queue off: %+v %v", tk, err)
	}
	if h.events.count(idepool.EventRefused, idepool.ReasonCapacity) != 1 {
		t.Fatal("no refusal event")
	}
}

// TestPressureGivesUpOtherWarm: capacity is full of another profile's warm
// containers; a cold start takes the room of one instead of failing.
func TestPressureGivesUpOtherWarm(t *testing.T) {
	for _, queue := range []bool{false, true} {
		t.Run(fmt.Sprintf("queue=%v", queue), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := setup{profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, 0), testProfile("other", 2)}}
				sl := withSlots(&s, 2, func(o *Options) { o.Queue.Enabled = queue })
				h := newHarness(t, s)
				h.reconcile()
				if p := h.pool("other"); p.Warm != 2 {
					t.Fatalf("other pool: %+v", p)
				}
				c := h.start("urgent")
				if c.Kind != idepool.ClaimCold {
					t.Fatalf("kind %s", c.Kind)
				}
				if p := h.pool("other"); p.Warm != 1 {
					t.Fatalf("other pool after pressure: %+v", p)
				}
				if n := h.events.count(idepool.EventStopped, idepool.ReasonCapacity); n != 1 {
					t.Fatalf("%d capacity stops", n)
				}
				// The other pool does not take the room back while it is full.
				h.reconcile()
				if p := h.pool("other"); p.Warm+p.Starting != 1 || sl.Headroom(idepool.Profile{}) != 0 {
					t.Fatalf("other pool refilled over capacity: %+v", p)
				}
				h.m.bg.Wait()
				h.checkNoLeak()
			})
		})
	}
}

func TestLimits(t *testing.T) {
	p := testProfile(idepool.DefaultProfile, 1)
	for _, queue := range []bool{false, true} {
		t.Run(fmt.Sprintf("queue=%v", queue), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, setup{profiles: []idepool.Profile{p}, opts: func(o *Options) {
					o.Queue.Enabled = queue
					o.Policies = map[string]Policy{idepool.DefaultProfile: {MaxContainers: 3, MaxPerUser: 2}}
				}})
				h.reconcile()
				ctx := context.Background()
				start := func(b, user string) (idepool.Claim, *Ticket, error) {
					return h.m.StartOrQueue(ctx, idepool.StartRequest{Workspace: ws(b), UserID: user})
				}
				if _, _, err := start("u1-a", "u1"); err != nil {
					t.Fatal(err)
				}
				if _, _, err := start("u1-b", "u1"); err != nil {
					t.Fatal(err)
				}
				// Per user: a third is refused (never queued), the same
				// workspace is still reused.
				if _, tk, err := start("u1-c", "u1"); idepool.ErrorCode(err) != idepool.ELimitExceeded || tk != nil {
					t.Fatalf("per-user limit: %v %+v", err, tk)
				}
				if c, _, err := start("u1-a", "u1"); err != nil || c.Kind != idepool.ClaimReused {
					t.Fatalf("reuse under the user limit: %+v %v", c.Kind, err)
				}
				// Per profile: 2 claimed + refill 1 = 3 live; a 4th start
				// takes the warm one, the 5th finds the profile full.
				h.reconcile()
				if _, _, err := start("u2-a", "u2"); err != nil {
					t.Fatal(err)
				}
				h.reconcile()
				if p := h.pool(idepool.DefaultProfile); p.Claimed+p.Warm+p.Starting > 3 {
					t.Fatalf("over the profile maximum: %+v", p)
				}
				_, tk, err := start("u3-a", "u3")
				if queue {
					if err != nil || tk == nil {
						t.Fatalf("queue on: the profile maximum should queue: %v %+v", err, tk)
					}
				} else if idepool.ErrorCode(err) != idepool.ELimitExceeded {
					t.Fatalf("profile maximum: %v", err)
				}
				h.m.bg.Wait()
				h.checkNoLeak()
			})
		})
	}
}

// neverFitsAdmitter refuses every create as no node could ever hold it.
type neverFitsAdmitter struct{}

func (neverFitsAdmitter) Admit(ctx context.Context, p idepool.Profile, kind idepool.ClaimKind) error {
	return &idepool.Error{Code: idepool.ECapacity, Message: "no node of the cluster can ever run a " + p.Name + " container",
		Details: map[string]any{"reason": idepool.ReasonNeverFits}}
}

// TestNeverFitsIsRefusedNotQueued: with the queue on, a start whose
// profile no node can ever hold is refused at once with the admitter's
// reason, not left waiting for capacity that will never come.
func TestNeverFitsIsRefusedNotQueued(t *testing.T) { synctest.Test(t, testNeverFitsIsRefusedNotQueued) }

func testNeverFitsIsRefusedNotQueued(t *testing.T) {
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, 0)}, admitter: neverFitsAdmitter{},
		opts: func(o *Options) { o.Queue = QueueOptions{Enabled: true} }})
	h.reconcile()
	c, tk, err := h.m.StartOrQueue(context.Background(), idepool.StartRequest{Workspace: ws("too-big")})
	if tk != nil || c.Container.ID != "" || !idepool.NeverFits(err) {
		t.Fatalf("StartOrQueue = %+v, ticket %+v, err %v; want a never-fits refusal", c, tk, err)
	}
}

// TestStartWaitsForARefillInFlight: with the queue on, a start that waits
// for ready and finds no warm container while the pool creates one that
// no waiting start is promised waits in the queue for that one rather than
// create its own beside it; the next start, with the refill promised,
// creates cold. A start that does not wait, or with the queue off, is
// answered with its own container at once.
func TestStartWaitsForARefillInFlight(t *testing.T) {
	for _, tc := range []struct {
		queue, waits bool
	}{{true, true}, {true, false}, {false, true}} {
		t.Run(fmt.Sprintf("queue=%v,waits=%v", tc.queue, tc.waits), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { testStartWaitsForARefillInFlight(t, tc.queue, tc.waits) })
		})
	}
}

func testStartWaitsForARefillInFlight(t *testing.T, queue, waits bool) {
	var hold atomic.Bool
	release := make(chan struct{})
	s := setup{profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, 1)},
		fake: fake.Config{BeforeCreate: func(ctx context.Context, spec idepool.ContainerSpec) error {
			if hold.Load() && spec.Labels[idepool.LabelBucket] == "" { // a refill, not a cold claim
				<-release
			}
			return nil
		}},
		opts: func(o *Options) { o.Queue = QueueOptions{Enabled: queue} }}
	h := newHarness(t, s)
	h.reconcile()
	if c := h.start("first"); c.Kind != idepool.ClaimWarm {
		t.Fatalf("first start: %s, want warm", c.Kind)
	}
	// The refill's create is held in flight.
	hold.Store(true)
	refilled := make(chan struct{})
	go func() { h.reconcile(); close(refilled) }()
	synctest.Wait()
	creates := h.rt.Creates()
	if creates != 2 {
		t.Fatalf("%d creates, want the first container and its refill", creates)
	}
	start := func(bucket string) (idepool.Claim, *Ticket) {
		t.Helper()
		c, tk, err := h.m.StartOrQueue(context.Background(), idepool.StartRequest{Workspace: ws(bucket), WaitsReady: waits})
		if err != nil {
			t.Fatalf("StartOrQueue(%s): %v", bucket, err)
		}
		return c, tk
	}

	second, tk := start("second")
	waited := queue && waits
	if waited {
		if tk == nil || second.Container.ID != "" {
			t.Fatalf("second start did not wait for the refill: %+v", second)
		}
		if h.rt.Creates() != creates {
			t.Fatalf("second start created a container beside the refill in flight")
		}
	} else {
		if tk != nil || second.Kind != idepool.ClaimCold {
			t.Fatalf("second start %+v %+v, want cold", second.Kind, tk)
		}
		h.settle(second.Container.ID)
	}
	// With the refill promised to the second start (or nobody waiting for
	// it), the third start creates its own.
	third, tk3 := start("third")
	if tk3 != nil || third.Kind != idepool.ClaimCold {
		t.Fatalf("third start: %+v %+v, want cold", third.Kind, tk3)
	}
	h.settle(third.Container.ID)

	close(release)
	<-refilled
	if waited {
		got := h.waitTicket(tk.ID)
		if got.Kind != ClaimQueued || got.Container.Workspace.Bucket != "second" {
			t.Fatalf("second start served %+v", got)
		}
		if got, err := h.m.WaitReady(context.Background(), got.Container.ID); err != nil || got.State != idepool.StateRunning {
			t.Fatalf("second start's container: %s %v", got.State, err)
		}
	} else if p := h.pool(idepool.DefaultProfile); p.Warm != 1 {
		t.Fatalf("the refill nobody waited for: %+v, want it warm", p)
	}
	h.reconcile() // the pool refills behind the claims
	h.m.bg.Wait()
	h.checkNoLeak()
}
