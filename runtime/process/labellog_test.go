//go:build linux

package process

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	idepool "github.com/idepool/idepool"
)

// Label changes are appended to labels.log; a new Runtime on the same
// DataDir sees the last one, a record torn by a crash is skipped, and a long
// log is folded into meta.json.
func TestLabelLog(t *testing.T) {
	o := testOptions(t)
	r := openRuntime(t, o)
	inst := mustCreate(t, r, testSpec(map[string]string{"app": "a"}, nil))
	ctx := t.Context()
	for i := range 3 {
		if err := r.SetLabels(ctx, inst.ID, map[string]string{"gen": strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(o.DataDir, "containers", inst.ID)
	check := func(want string) {
		t.Helper()
		m, err := readMeta(dir)
		if err != nil {
			t.Fatal(err)
		}
		if m.Labels["gen"] != want || m.Labels["app"] != "a" || m.Labels[idepool.LabelID] != inst.ID {
			t.Fatalf("labels after restart = %v, want gen=%s", m.Labels, want)
		}
	}
	check("2")

	// A crash mid-append leaves half a record: it is skipped, and the next
	// record still counts.
	f, err := os.OpenFile(filepath.Join(dir, labelLogName), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"gen":"torn","idepool.`)
	f.Close()
	check("2")
	if err := r.SetLabels(ctx, inst.ID, map[string]string{"gen": "3"}); err != nil {
		t.Fatal(err)
	}
	check("3")

	// A Runtime opened anew adopts the container with the logged labels.
	r2, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	got, err := r2.Recover(ctx)
	if err != nil || len(got) != 1 || got[0].Labels["gen"] != "3" {
		t.Fatalf("Recover = %+v, %v", got, err)
	}

	// Past labelLogMax the log is folded into meta.json and emptied.
	for i := 0; ; i++ {
		if err := r.SetLabels(ctx, inst.ID, map[string]string{"gen": "fold-" + strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(filepath.Join(dir, labelLogName))
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() == 0 {
			b, _ := os.ReadFile(filepath.Join(dir, "meta.json"))
			if want := `"gen": "fold-` + strconv.Itoa(i) + `"`; !strings.Contains(string(b), want) {
				t.Fatalf("meta.json after folding lacks %s", want)
			}
			check("fold-" + strconv.Itoa(i))
			return
		}
		if i > 10000 {
			t.Fatal("labels.log never folded")
		}
	}
}

// appendJSONString must write what encoding/json reads back as the same
// string (or, for invalid UTF-8, what encoding/json itself would write).
func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{
		"", "plain", `quote " and \ backslash`, "tab\tnewline\ncr\r nul\x00 bell\x07 unit\x1f",
		"ünïcödé 日本語 😀", "line sep \u2028 para \u2029", "</script>&<>", "bad \xff utf8 \xc3", "del \x7f",
	} {
		got := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Errorf("%q: wrote %s, not JSON: %v", s, got, err)
			continue
		}
		want := s
		if !utf8.ValidString(s) {
			std, _ := json.Marshal(s)
			json.Unmarshal(std, &want)
		}
		if back != want {
			t.Errorf("%q: wrote %s, read back %q", s, got, back)
		}
	}
}
