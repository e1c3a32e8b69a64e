package wsync

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestPendingResolution: a push recorded as pending before its PUT, and
// the journal replayed after a kill, is settled against the listing.
func TestPendingResolution(t *testing.T) {
	const (
		h1 = "0cc175b9c0f1b6a831c399e269772661"
		h2 = "92eb5ffee6ae2fec3ad71c777531578f"
	)
	pend := `{"p":"a.txt","pending":{"key":"a.txt","size":1,"hash":"` + h1 + `","mtime":7}}`
	base := `{"p":"a.txt","b":{"key":"a.txt","etag":"` + h1 + `","size":1,"hash":"` + h1 + `","mtime":7}}`
	got1 := Base{Key: "a.txt", ETag: h1, Size: 1, Hash: h1, MTime: 7}
	old := Base{Key: "a.txt", ETag: h2, Size: 1, Hash: h2, MTime: 3}
	oldLine := `{"p":"a.txt","b":{"key":"a.txt","etag":"` + h2 + `","size":1,"hash":"` + h2 + `","mtime":3}}`
	tests := []struct {
		name    string
		journal []string
		remote  map[string]ObjectInfo
		want    map[string]Base // the planner's base after resolution
	}{
		{"pending matched becomes the base", []string{pend},
			map[string]ObjectInfo{"a.txt": {Key: "a.txt", ETag: h1, Size: 1}}, map[string]Base{"a.txt": got1}},
		{"pending matched replaces an older base", []string{oldLine, pend},
			map[string]ObjectInfo{"a.txt": {Key: "a.txt", ETag: h1, Size: 1}}, map[string]Base{"a.txt": got1}},
		{"pending, PUT never landed: ignored", []string{pend},
			map[string]ObjectInfo{}, map[string]Base{}},
		{"pending, someone else wrote: ignored", []string{pend},
			map[string]ObjectInfo{"a.txt": {Key: "a.txt", ETag: h2, Size: 1}}, map[string]Base{}},
		{"pending, size differs: ignored", []string{pend},
			map[string]ObjectInfo{"a.txt": {Key: "a.txt", ETag: h1, Size: 2}}, map[string]Base{}},
		{"pending unmatched keeps the older base", []string{oldLine, pend},
			map[string]ObjectInfo{"a.txt": {Key: "a.txt", ETag: h2, Size: 1}}, map[string]Base{"a.txt": old}},
		{"pending then base: base", []string{pend, base},
			map[string]ObjectInfo{"a.txt": {Key: "a.txt", ETag: h1, Size: 1}}, map[string]Base{"a.txt": got1}},
		{"pending then base removed: no base", []string{pend, `{"p":"a.txt","b":null}`},
			map[string]ObjectInfo{"a.txt": {Key: "a.txt", ETag: h1, Size: 1}}, map[string]Base{}},
		{"pending then dropped: ignored", []string{pend, `{"p":"a.txt","unpend":true}`},
			map[string]ObjectInfo{"a.txt": {Key: "a.txt", ETag: h1, Size: 1}}, map[string]Base{}},
		{"torn pending line: ignored", []string{oldLine, pend[:20]},
			map[string]ObjectInfo{"a.txt": {Key: "a.txt", ETag: h1, Size: 1}}, map[string]Base{"a.txt": old}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "state.json")
			j := strings.Join(tc.journal, "\n")
			if !strings.HasSuffix(tc.journal[len(tc.journal)-1], "}") {
				j = strings.Join(tc.journal[:len(tc.journal)-1], "\n") + "\n" + tc.journal[len(tc.journal)-1]
			} else {
				j += "\n"
			}
			if err := os.WriteFile(journalName(file), []byte(j), 0o600); err != nil {
				t.Fatal(err)
			}
			st, err := LoadState(file)
			if err != nil {
				t.Fatal(err)
			}
			base := st.clone()
			bases, _ := ResolvePending(st.Pending, tc.remote)
			for p, b := range bases {
				base[p] = b
			}
			if !reflect.DeepEqual(base, tc.want) {
				t.Fatalf("base = %+v, want %+v", base, tc.want)
			}
		})
	}
}

// TestPendingSurvivesSnapshot: a snapshot taken while a push is pending
// keeps it, so truncating the journal loses no intent.
func TestPendingSurvivesSnapshot(t *testing.T) {
	file := filepath.Join(t.TempDir(), "state.json")
	s := &State{Version: stateVersion, Entries: map[string]Base{}, Pending: map[string]Pending{"x": {Key: "x", Size: 3, Hash: "h"}}}
	if err := s.Save(file); err != nil {
		t.Fatal(err)
	}
	got, err := LoadState(file)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Pending, s.Pending) {
		t.Fatalf("pending = %+v", got.Pending)
	}
}

// TestPushRecordsPendingFirst: the state on disk (snapshot + journal)
// holds the pending push before the store sees the PUT.
func TestPushRecordsPendingFirst(t *testing.T) {
	dir, stateDir := t.TempDir(), t.TempDir()
	file := filepath.Join(stateDir, "state.json")
	if err := os.WriteFile(filepath.Join(dir, "f.txt"), []byte("abc"), 0o644); err != nil {
		t.Fatal(err)
	}
	var seen []map[string]Pending
	st := &pendingProbeStore{onPut: func() {
		on, err := LoadState(file)
		if err != nil {
			t.Error(err)
			return
		}
		seen = append(seen, on.Pending)
	}}
	eng, err := NewEngine(Config{Dir: dir, StateFile: file, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	if _, err := eng.SyncOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0]["f.txt"].Hash != "900150983cd24fb0d6963f7d28e17f72" || seen[0]["f.txt"].Size != 3 {
		t.Fatalf("pending on disk at PUT time: %+v", seen)
	}
	loaded, err := LoadState(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded.Pending) != 0 || loaded.Entries["f.txt"].ETag != "900150983cd24fb0d6963f7d28e17f72" {
		t.Fatalf("after the cycle: %+v", loaded)
	}
}

// pendingProbeStore is an empty bucket that accepts PUTs, calling onPut
// first.
type pendingProbeStore struct{ onPut func() }

func (s *pendingProbeStore) List(context.Context, string) ([]ObjectInfo, error) { return nil, nil }

func (s *pendingProbeStore) Get(context.Context, string, int64, int64) (io.ReadCloser, ObjectInfo, error) {
	return nil, ObjectInfo{}, ErrNotFound
}

func (s *pendingProbeStore) Put(_ context.Context, key string, r io.ReaderAt, size int64, _ Condition) (ObjectInfo, error) {
	if key != MarkerRel { // the identity marker is no workspace file
		s.onPut()
	}
	h := md5.New()
	if _, err := io.Copy(h, io.NewSectionReader(r, 0, size)); err != nil {
		return ObjectInfo{}, err
	}
	return ObjectInfo{Key: key, ETag: hex.EncodeToString(h.Sum(nil)), Size: size}, nil
}

func (s *pendingProbeStore) Delete(context.Context, string, Condition) error { return nil }
