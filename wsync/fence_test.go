package wsync

import (
	"bytes"
	"strings"
	"testing"
)

// putAs writes rel in the remote workspace as a writer of epoch would (a
// store stamping that epoch), as the workspace's other container does.
func (e *env) putAs(epoch int64, rel string, body []byte) {
	e.t.Helper()
	cfg := e.s3Config()
	cfg.Epoch = epoch
	st, err := NewS3Store(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := st.Put(e.ctx(), e.prefix+rel, bytes.NewReader(body), int64(len(body)), Condition{}); err != nil {
		e.t.Fatalf("put %s as epoch %d: %v", rel, epoch, err)
	}
}

// conflictCopy returns the one local file named rel's stem + ".conflict-" +
// who, or "".
func (e *env) conflictCopy(stem, who string) string {
	for _, f := range e.localFiles() {
		if strings.HasPrefix(f, stem+".conflict-"+who+"-") {
			return f
		}
	}
	return ""
}

// TestSupersededWriterYields: a container cut off from the cluster while
// its replacement (a later owner epoch) went on in the same workspace
// comes back with its own edit of a file the replacement also changed. It
// must not overwrite the replacement's version: that keeps the name, here
// and in the store, and the stale edit is kept beside it as a conflict
// copy. Small files and large ones (multipart upload, ranged download)
// carry the epoch alike.
func TestSupersededWriterYields(t *testing.T) {
	for _, size := range []int{0, 7 << 20} {
		name := "small"
		if size > 0 {
			name = "large"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, "ws/")
			body := func(s string) []byte {
				if size == 0 {
					return []byte(s)
				}
				return append(bytes.Repeat([]byte{'x'}, size), s...)
			}
			var events eventLog
			stale := e.engine(e.storeWithEpoch(100), testOptions(), &events)
			stale.epoch = 100
			e.putAs(100, "notes.txt", body("v0"))
			e.syncOnce(stale)

			e.putAs(200, "notes.txt", body("replacement edit")) // the later container
			e.writeLocal("notes.txt", body("stale edit"))       // the cut-off one
			e.syncOnce(stale)
			e.syncOnce(stale)

			if b, _ := e.remote("notes.txt"); !bytes.Equal(b, body("replacement edit")) {
				t.Fatalf("remote notes.txt ends %q: the superseded writer overwrote the replacement", tail(b))
			}
			if b, _ := e.local("notes.txt"); !bytes.Equal(b, body("replacement edit")) {
				t.Fatalf("local notes.txt ends %q, want the replacement's version", tail(b))
			}
			c := e.conflictCopy("notes", "superseded")
			if c == "" {
				t.Fatalf("no superseded conflict copy among %v", e.localFiles())
			}
			if b, _ := e.remote(c); !bytes.Equal(b, body("stale edit")) {
				t.Fatalf("remote %s ends %q, want the stale edit", c, tail(b))
			}
			if !events.has("conflict", "notes.txt") {
				t.Fatalf("conflict not reported: %+v", events.evs)
			}
			if res := e.syncOnce(stale); len(res.Actions) != 0 {
				t.Fatalf("not settled: %+v", res.Actions)
			}
		})
	}
}

// TestLaterWriterKeepsName: the replacement meeting the stale container's
// write (an earlier epoch) keeps its own version under the name, as any
// conflict does; so does a writer meeting an object without an epoch.
func TestLaterWriterKeepsName(t *testing.T) {
	for _, remoteEpoch := range []int64{100, 0} {
		e := newEnv(t, "")
		eng := e.engine(e.storeWithEpoch(200), testOptions(), nil)
		eng.epoch = 200
		e.putAs(200, "notes.txt", []byte("v0"))
		e.syncOnce(eng)
		e.putAs(remoteEpoch, "notes.txt", []byte("other edit"))
		e.writeLocal("notes.txt", []byte("my edit"))
		e.syncOnce(eng)
		e.syncOnce(eng)
		if b, _ := e.remote("notes.txt"); string(b) != "my edit" {
			t.Fatalf("remote epoch %d: remote notes.txt = %q, want this writer's", remoteEpoch, b)
		}
		c := e.conflictCopy("notes", "remote")
		if b, _ := e.remote(c); c == "" || string(b) != "other edit" {
			t.Fatalf("remote epoch %d: conflict copy %q = %q", remoteEpoch, c, b)
		}
	}
}

func (e *env) storeWithEpoch(epoch int64) *S3Store {
	e.t.Helper()
	cfg := e.s3Config()
	cfg.Epoch = epoch
	st, err := NewS3Store(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

func tail(b []byte) []byte {
	if len(b) > 40 {
		return b[len(b)-40:]
	}
	return b
}
