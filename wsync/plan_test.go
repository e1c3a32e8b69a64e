package wsync

import (
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	base := &Base{Key: "k", ETag: "e1", Size: 1, Hash: "h1"}
	same := &LocalFile{Size: 1, Hash: "h1"}
	edited := &LocalFile{Size: 2, Hash: "h2"}
	remoteSame := &ObjectInfo{Key: "k", ETag: "e1", Size: 1}
	remoteEdited := &ObjectInfo{Key: "k", ETag: "e2", Size: 3}
	remoteAsLocalEdit := &ObjectInfo{Key: "k", ETag: "h2", Size: 2} // single-part ETag = MD5

	tests := []struct {
		name   string
		base   *Base
		local  *LocalFile
		remote *ObjectInfo
		want   Action
	}{
		// Without a base.
		{"nothing anywhere", nil, nil, nil, Nothing},
		{"added locally", nil, edited, nil, Push},
		{"added remotely", nil, nil, remoteEdited, Pull},
		{"added on both sides, same bytes", nil, edited, remoteAsLocalEdit, Adopt},
		{"added on both sides, different", nil, edited, remoteEdited, Conflict},
		// With a base, one side changed.
		{"unchanged", base, same, remoteSame, Nothing},
		{"changed locally", base, edited, remoteSame, Push},
		{"changed remotely", base, same, remoteEdited, Pull},
		{"deleted locally", base, nil, remoteSame, DeleteRemote},
		{"deleted remotely", base, same, nil, DeleteLocal},
		// With a base, both sides changed.
		{"changed on both, different", base, edited, remoteEdited, Conflict},
		{"changed on both, same bytes", base, edited, remoteAsLocalEdit, Adopt},
		{"deleted locally, changed remotely: edit kept", base, nil, remoteEdited, Pull},
		{"changed locally, deleted remotely: edit kept", base, edited, nil, Push},
		{"deleted on both", base, nil, nil, Forget},
		// Metadata-only differences do not count.
		{"local mtime moved, same hash", base, &LocalFile{Size: 1, MTime: 99, Hash: "h1"}, remoteSame, Nothing},
		{"remote mtime differs, same etag", base, same, &ObjectInfo{Key: "k", ETag: "e1", Size: 1, ModTime: base2time()}, Nothing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Decide(tt.base, tt.local, tt.remote); got != tt.want {
				t.Fatalf("Decide = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPlanSkipsUnknownPathsAndSorts(t *testing.T) {
	base := map[string]Base{
		"link":    {ETag: "e", Hash: "h"}, // now a symlink locally: unknown, must not delete remote
		"gone":    {ETag: "e", Hash: "h"},
		"kept":    {ETag: "e", Hash: "h"},
		"big.bin": {ETag: "e", Hash: "h"},
	}
	local := map[string]LocalFile{"kept": {Hash: "h"}, "new": {Hash: "n"}}
	remote := map[string]ObjectInfo{"link": {ETag: "e"}, "gone": {ETag: "e"}, "kept": {ETag: "e"}, "big.bin": {ETag: "e"}, "a/remote": {ETag: "r"}}
	skip := map[string]bool{"link": true, "big.bin": true}
	got := Plan(base, local, remote, func(p string) bool { return skip[p] })
	want := []struct {
		path string
		a    Action
	}{{"a/remote", Pull}, {"gone", DeleteRemote}, {"new", Push}}
	if len(got) != len(want) {
		t.Fatalf("plan = %+v", got)
	}
	for i, w := range want {
		if got[i].Path != w.path || got[i].Action != w.a {
			t.Fatalf("step %d = %s %v, want %s %v", i, got[i].Path, got[i].Action, w.path, w.a)
		}
	}
	if c := got[2].Cond(); !c.IfNoneMatch || c.IfMatch != "" {
		t.Fatalf("a new object must be created with If-None-Match, got %+v", c)
	}
	if c := got[1].Cond(); c.IfMatch != "e" {
		t.Fatalf("a delete must be conditional on the seen ETag, got %+v", c)
	}
}

func TestRacyMTimeIsNotTrusted(t *testing.T) {
	now := time.Now().UnixNano()
	if !racy(now) || racy(now-int64(3*time.Second)) {
		t.Fatal("racy window")
	}
}
