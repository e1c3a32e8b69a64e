package wsync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idepool/idepool"
)

// reportLog collects what an AgentSyncer reports.
type reportLog struct {
	mu sync.Mutex
	rs []idepool.AgentReport
}

func (l *reportLog) add(r idepool.AgentReport) { l.mu.Lock(); l.rs = append(l.rs, r); l.mu.Unlock() }

func (l *reportLog) event(name string) (idepool.AgentReport, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.rs {
		if r.Event == name {
			return r, true
		}
	}
	return idepool.AgentReport{}, false
}

// liveWorkspace starts an AgentSyncer over files that are on both sides,
// agreed (the marker written), and returns the file names.
func liveWorkspace(t *testing.T, e *env, reports *reportLog) (*AgentSyncer, []string) {
	t.Helper()
	var files []string
	for i := range 6 {
		rel := fmt.Sprintf("src/f%d.txt", i)
		e.putRemote(rel, []byte("remote "+rel))
		files = append(files, rel)
	}
	s := NewAgentSyncer(e.dir, e.state, nil, testOptions())
	if err := s.Start(e.ctx(), e.assignment(), reports.add); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(e.ctx()) })
	e.writeLocal("notes/unsaved.txt", []byte("typed in the IDE"))
	files = append(files, "notes/unsaved.txt")
	eventually(t, 30*time.Second, func() error {
		if _, ok := e.remote("notes/unsaved.txt"); !ok {
			return fmt.Errorf("unsaved.txt not pushed")
		}
		if _, ok := e.remote(MarkerRel); !ok {
			return fmt.Errorf("no identity marker")
		}
		return nil
	})
	slices.Sort(files)
	return s, files
}

// checkNothingLost waits until every file is back in the store, failing
// at once if any local file goes missing meanwhile, and until the reset
// was reported.
func checkNothingLost(t *testing.T, e *env, files []string, reports *reportLog) {
	t.Helper()
	eventually(t, 60*time.Second, func() error {
		if got := e.localFiles(); !slices.Equal(got, files) {
			t.Fatalf("local files now %v, want %v: the sync deleted the user's files", got, files)
		}
		for _, rel := range files {
			if _, ok := e.remote(rel); !ok {
				return fmt.Errorf("%s not uploaded again", rel)
			}
		}
		if _, ok := e.remote(MarkerRel); !ok {
			return fmt.Errorf("marker not written again")
		}
		if _, ok := reports.event("remote-reset"); !ok {
			return fmt.Errorf("no remote-reset event")
		}
		return nil
	})
	for _, rel := range files {
		if b, _ := e.local(rel); len(b) == 0 {
			t.Fatalf("%s emptied", rel)
		}
	}
}

// A store emptied under a live sync (its volume lost): to a three-way
// merge that is "everything deleted remotely". With the identity marker
// gone the engine forgets its base instead: nothing is deleted on disk,
// every file goes up again, and a remote-reset is reported.
func TestEmptiedStoreUnderLiveSyncDeletesNothing(t *testing.T) {
	e := newEnv(t, "u1/")
	var reports reportLog
	_, files := liveWorkspace(t, e, &reports)
	// Empty the workspace at once, marker included, as a lost volume does
	// (one rename in the server's posix tree: no listing sees half of it).
	if err := os.Rename(filepath.Join(e.srv.Dir, e.bucket, "u1"), filepath.Join(t.TempDir(), "gone")); err != nil {
		t.Fatal(err)
	}
	checkNothingLost(t, e, files, &reports)
}

// The mass-deletion guard: the store deletes most of the files (the
// marker intact); the deletions are held, reported with their count, the
// files stay; once confirmed they are applied.
func TestMassDeletionHeldUntilConfirmed(t *testing.T) {
	e := newEnv(t, "u1/")
	for i := range 10 {
		e.putRemote(fmt.Sprintf("f%d.txt", i), []byte("v1"))
	}
	var events eventLog
	eng := e.engine(nil, testOptions(), &events)
	e.syncOnce(eng)
	if n := len(e.localFiles()); n != 10 {
		t.Fatalf("%d files pulled", n)
	}
	for i := range 8 {
		e.deleteRemote(fmt.Sprintf("f%d.txt", i))
	}
	e.syncOnce(eng)
	if n := len(e.localFiles()); n != 10 {
		t.Fatalf("%d local files left after the store deleted 8 of 10: the deletions were not held", n)
	}
	if !events.has("deletions-held", "8 of 10") {
		t.Fatalf("no deletions-held event with the count: %+v", events.evs)
	}
	if st := eng.Stats(); st.DeletionsHeld != 8 {
		t.Fatalf("stats: %d deletions held, want 8", st.DeletionsHeld)
	}
	e.syncOnce(eng) // still held: nothing confirmed
	if n := len(e.localFiles()); n != 10 {
		t.Fatalf("%d local files: held deletions applied without a confirmation", n)
	}
	if n := eng.ConfirmDeletions(); n != 8 {
		t.Fatalf("ConfirmDeletions = %d, want 8", n)
	}
	e.syncOnce(eng)
	if got := e.localFiles(); !slices.Equal(got, []string{"f8.txt", "f9.txt"}) {
		t.Fatalf("after the confirmation: %v", got)
	}
	if st := eng.Stats(); st.DeletionsHeld != 0 {
		t.Fatalf("stats: %d deletions still held", st.DeletionsHeld)
	}
	// A few deletions (at most the floor) are a user's: not held.
	e.deleteRemote("f8.txt")
	e.syncOnce(eng)
	if got := e.localFiles(); !slices.Equal(got, []string{"f9.txt"}) {
		t.Fatalf("deleting 1 of 2 files: %v", got)
	}
}

// A workspace whose prefix holds another workspace (u1/ and u1/sub/) never
// syncs the inner one's identity marker.
func TestNestedWorkspaceMarkerNotSynced(t *testing.T) {
	e := newEnv(t, "u1/")
	e.putRemote("sub/"+MarkerRel, []byte("idepool workspace inner\n"))
	e.putRemote("sub/a.txt", []byte("a"))
	eng := e.engine(nil, testOptions(), nil)
	e.syncOnce(eng)
	if got := e.localFiles(); !slices.Equal(got, []string{"sub/a.txt"}) {
		t.Fatalf("local files %v: the inner workspace's marker was pulled", got)
	}
}

// refuseMarker is a store whose credentials may not write the marker.
type refuseMarker struct {
	Store
	mu    sync.Mutex
	tries int
}

func (s *refuseMarker) Put(ctx context.Context, key string, r io.ReaderAt, size int64, cond Condition) (ObjectInfo, error) {
	if strings.HasSuffix(key, MarkerRel) {
		s.mu.Lock()
		s.tries++
		s.mu.Unlock()
		return ObjectInfo{}, errors.New("AccessDenied")
	}
	return s.Store.Put(ctx, key, r, size, cond)
}

// A store that refuses the marker still syncs (cycles do not fail), is
// told about it once, and is not asked again every cycle.
func TestMarkerRefusedStillSyncs(t *testing.T) {
	e := newEnv(t, "u1/")
	st := &refuseMarker{Store: e.store}
	var events eventLog
	eng := e.engine(st, testOptions(), &events)
	e.writeLocal("a.txt", []byte("a"))
	e.syncOnce(eng) // fails the test on a cycle error
	e.writeLocal("b.txt", []byte("b"))
	e.syncOnce(eng)
	if _, ok := e.remote("b.txt"); !ok {
		t.Fatal("b.txt not pushed")
	}
	if st.tries != 1 || !events.has("error", "identity marker") {
		t.Fatalf("%d marker writes, events %+v", st.tries, events.evs)
	}
}
