package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseDotenv(t *testing.T) {
	tests := []struct {
		name, text string
		want       map[string]string
		wantErr    string
	}{
		{"empty", "", map[string]string{}, ""},
		{"blank and comments", "\n  \n# a comment\n   # indented\n", map[string]string{}, ""},
		{"plain", "A=1\nB = two words \n", map[string]string{"A": "1", "B": "two words"}, ""},
		{"export", "export A=1\nexport\tB=2\nexportC=3\n", map[string]string{"A": "1", "B": "2", "exportC": "3"}, ""},
		{"empty value", "A=\nB=''\nC=\"\"", map[string]string{"A": "", "B": "", "C": ""}, ""},
		{"inline comment", "A=1 # one\nB=x#y\nC='v # not a comment' # c\n", map[string]string{"A": "1", "B": "x#y", "C": "v # not a comment"}, ""},
		{"single quotes literal", `A='a\nb $X "q"'`, map[string]string{"A": `a\nb $X "q"`}, ""},
		{"double quote escapes", `A="a\nb\t\"q\" \\ \$X \z"`, map[string]string{"A": "a\nb\t\"q\" \\ $X \\z"}, ""},
		{"equals in value", "A=b=c\nB=\"x=y\"", map[string]string{"A": "b=c", "B": "x=y"}, ""},
		{"CRLF and BOM", "\ufeffA=1\r\nB='2'\r\n", map[string]string{"A": "1", "B": "2"}, ""},
		{"later wins", "A=1\nA=2\n", map[string]string{"A": "2"}, ""},
		{"no equals", "A=1\nJUSTAWORD\n", nil, "f.env:2: want KEY=VALUE"},
		{"bad name", "1A=x\n", nil, `f.env:1: "1A" is not a variable name`},
		{"bad name with space", "MY VAR=x\n", nil, `f.env:1: "MY VAR" is not a variable name`},
		{"unterminated single", "A='abc\n", nil, "f.env:1: A: unterminated single quote"},
		{"unterminated double", "\n\nA=\"abc\\\"\n", nil, "f.env:3: A: unterminated double quote"},
		{"text after quote", "A='x' y\n", nil, "f.env:1: A: unexpected text after the closing quote"},
		{"all errors", "A\nB\n", nil, "f.env:1: want KEY=VALUE\nf.env:2: want KEY=VALUE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseDotenv("f.env", tt.text)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// Values may be secrets: errors never show them.
func TestParseDotenvErrorsHideValues(t *testing.T) {
	_, err := parseDotenv("f.env", "AWS_SECRET_ACCESS_KEY='topsecretvalue\n")
	if err == nil || strings.Contains(err.Error(), "topsecretvalue") {
		t.Errorf("error %v", err)
	}
}
