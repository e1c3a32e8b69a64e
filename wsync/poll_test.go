package wsync

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestNextPoll(t *testing.T) {
	const base, most = time.Second, 5 * time.Second
	idle := CycleResult{Actions: map[Action]int{}}
	for _, c := range []struct {
		name string
		cur  time.Duration
		res  CycleResult
		err  error
		want time.Duration
	}{
		{"idle doubles", base, idle, nil, 2 * time.Second},
		{"idle doubles again", 2 * time.Second, idle, nil, 4 * time.Second},
		{"idle stops at most", 4 * time.Second, idle, nil, most},
		{"idle at most stays", most, idle, nil, most},
		{"no actions map is idle", base, CycleResult{}, nil, 2 * time.Second},
		{"zero counts are idle", base, CycleResult{Actions: map[Action]int{Pull: 0}}, nil, 2 * time.Second},
		{"a pull resets", most, CycleResult{Actions: map[Action]int{Pull: 1}}, nil, base},
		{"a push resets", 4 * time.Second, CycleResult{Actions: map[Action]int{Push: 3}}, nil, base},
		{"a retry resets", most, CycleResult{Retry: true}, nil, base},
		{"a failure resets", most, CycleResult{Failed: 1}, nil, base},
		{"an error resets", most, idle, errors.New("list: 503"), base},
	} {
		if got := nextPoll(c.cur, base, most, c.res, c.err); got != c.want {
			t.Errorf("%s: nextPoll(%v) = %v, want %v", c.name, c.cur, got, c.want)
		}
	}
}

// listTimes records when the store was listed.
type listTimes struct {
	Store
	mu sync.Mutex
	at []time.Time
}

func (s *listTimes) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	s.mu.Lock()
	s.at = append(s.at, time.Now())
	s.mu.Unlock()
	return s.Store.List(ctx, prefix)
}

func (s *listTimes) since(i int) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.at[min(i, len(s.at)):])
}

// An idle workspace is listed less and less often, and a change made to the
// store by someone else still arrives. Only a bound that a slow machine
// cannot break is checked: timers never fire early, so the gaps between
// listings are at least the back-off's intervals.
func TestIdleWorkspaceIsPolledLessOften(t *testing.T) {
	e := newEnv(t, "")
	store := &listTimes{Store: e.store}
	opts := testOptions()
	opts.PollInterval, opts.MaxPollInterval = 20*time.Millisecond, 320*time.Millisecond
	eng := e.engine(store, opts, nil)
	e.syncOnce(eng)
	first := len(store.since(0))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = eng.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// Seven idle polls: after the first, gaps of at least 40, 80, 160, 320,
	// 320 and 320 ms (1240 ms); a poll every 20 ms would take 120 ms.
	var polls []time.Time
	eventually(t, 30*time.Second, func() error {
		if polls = store.since(first); len(polls) < 7 {
			return fmt.Errorf("%d polls so far", len(polls))
		}
		return nil
	})
	if took := polls[6].Sub(polls[0]); took < time.Second {
		t.Errorf("7 polls of an idle workspace within %v: no back-off (want at least 1240 ms)", took)
	}

	e.putRemote("from-elsewhere.txt", []byte("hello"))
	eventually(t, 20*time.Second, func() error {
		if b, ok := e.local("from-elsewhere.txt"); !ok || string(b) != "hello" {
			return errors.New("from-elsewhere.txt not pulled")
		}
		return nil
	})
}
