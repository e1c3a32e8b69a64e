package config

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
)

var envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// readDotenv reads and parses a .env file. A missing file gives an error
// wrapping os.ErrNotExist.
func readDotenv(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseDotenv(path, string(data))
}

// parseDotenv parses .env text: KEY=VALUE lines, an optional "export "
// prefix, # comments (whole lines, or after whitespace following an
// unquoted value), blank lines, values in single quotes (literal) or double
// quotes (\n, \t, \r, \", \\ and \$ escapes). There is no variable
// expansion. A later line wins over an earlier one. Every bad line is
// reported as name:line; values never appear in errors (they may be
// secrets).
func parseDotenv(name, text string) (map[string]string, error) {
	out := map[string]string{}
	var errs []error
	text = strings.TrimPrefix(text, "\ufeff")
	for i, line := range strings.Split(text, "\n") {
		t := strings.TrimSpace(strings.TrimSuffix(line, "\r"))
		if t == "" || t[0] == '#' {
			continue
		}
		if rest, ok := strings.CutPrefix(t, "export"); ok && rest != "" && (rest[0] == ' ' || rest[0] == '\t') {
			t = strings.TrimLeft(rest, " \t")
		}
		key, val, ok := strings.Cut(t, "=")
		key = strings.TrimSpace(key)
		if !ok {
			errs = append(errs, fmt.Errorf("%s:%d: want KEY=VALUE", name, i+1))
			continue
		}
		if !envKeyRE.MatchString(key) {
			errs = append(errs, fmt.Errorf("%s:%d: %q is not a variable name (want letters, digits and _, not starting with a digit)", name, i+1, key))
			continue
		}
		v, err := dotenvValue(strings.TrimLeft(val, " \t"))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %s: %w", name, i+1, key, err))
			continue
		}
		out[key] = v
	}
	return out, errors.Join(errs...)
}

// dotenvValue parses what follows '=' (leading blanks removed).
func dotenvValue(s string) (string, error) {
	var v, rest string
	switch {
	case strings.HasPrefix(s, "'"):
		end := strings.IndexByte(s[1:], '\'')
		if end < 0 {
			return "", errors.New("unterminated single quote")
		}
		v, rest = s[1:1+end], s[2+end:]
	case strings.HasPrefix(s, `"`):
		var b strings.Builder
		closed := false
		i := 1
		for ; i < len(s); i++ {
			c := s[i]
			if c == '"' {
				closed = true
				i++
				break
			}
			if c == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					b.WriteByte('\n')
				case 't':
					b.WriteByte('\t')
				case 'r':
					b.WriteByte('\r')
				case '"', '\\', '$':
					b.WriteByte(s[i])
				default:
					b.WriteByte('\\')
					b.WriteByte(s[i])
				}
				continue
			}
			b.WriteByte(c)
		}
		if !closed {
			return "", errors.New("unterminated double quote")
		}
		v, rest = b.String(), s[i:]
	default:
		// An unquoted value ends at a '#' that follows a blank.
		for i := 1; i < len(s); i++ {
			if s[i] == '#' && (s[i-1] == ' ' || s[i-1] == '\t') {
				s = s[:i]
				break
			}
		}
		return strings.TrimSpace(s), nil
	}
	rest = strings.TrimSpace(rest)
	if rest != "" && rest[0] != '#' {
		return "", errors.New("unexpected text after the closing quote")
	}
	return v, nil
}
