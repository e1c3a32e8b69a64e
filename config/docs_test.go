package config

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDocs keeps ENVIRONMENT_VARIABLES.md and the table in step: every
// variable documented once, under its topic's heading, with the same
// default; nothing documented that the code does not read. A table row
// is "| `NAME` | `default` | description |"; a default cell without
// backticks (e.g. "*(derived)*") means no literal default.
func TestDocs(t *testing.T) {
	const path = "../ENVIRONMENT_VARIABLES.md"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ def, topic string }
	nameRE := regexp.MustCompile("^`?([A-Z][A-Z0-9_]*)`?$")
	doc := map[string]row{}
	topic := ""
	for i, line := range strings.Split(string(data), "\n") {
		if h, ok := strings.CutPrefix(line, "## "); ok {
			topic = strings.TrimSpace(h)
			continue
		}
		if !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		if len(cells) < 3 {
			continue
		}
		m := nameRE.FindStringSubmatch(strings.TrimSpace(cells[0]))
		if m == nil {
			continue
		}
		def := strings.TrimSpace(cells[1])
		if len(def) >= 2 && def[0] == '`' && def[len(def)-1] == '`' {
			def = def[1 : len(def)-1]
		} else {
			def = ""
		}
		if _, dup := doc[m[1]]; dup {
			t.Errorf("%s:%d: %s documented twice", path, i+1, m[1])
		}
		doc[m[1]] = row{def, topic}
	}

	for _, s := range Describe() {
		d, ok := doc[s.Name]
		want := docRow(s)
		switch {
		case !ok:
			t.Errorf("%s is not documented; add under \"## %s\":\n%s", s.Name, s.Topic, want)
		case d.def != s.Default:
			t.Errorf("%s: documented default %q, code has %q:\n%s", s.Name, d.def, s.Default, want)
		case d.topic != s.Topic:
			t.Errorf("%s: documented under %q, its topic is %q", s.Name, d.topic, s.Topic)
		}
		delete(doc, s.Name)
	}
	for name := range doc {
		t.Errorf("%s is documented but the code does not read it", name)
	}
}

// docRow is the row the documentation should have for s.
func docRow(s VarSpec) string {
	def := "*(none)*"
	if s.Default != "" {
		def = "`" + s.Default + "`"
	}
	return fmt.Sprintf("| `%s` | %s | %s Accepts %s. |", s.Name, def, s.Description, s.Accepted())
}

// TestPrintDocRows prints every row (go test -run PrintDocRows -v) to help
// edit the documentation.
func TestPrintDocRows(t *testing.T) {
	if !testing.Verbose() {
		t.Skip("only with -v")
	}
	for _, topic := range Topics() {
		t.Logf("## %s", topic)
		for _, s := range Describe() {
			if s.Topic == topic {
				t.Log(docRow(s))
			}
		}
	}
}
