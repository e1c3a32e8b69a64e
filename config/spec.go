package config

import (
	"fmt"
	"math"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Kind says how a variable's text is parsed and what it accepts. Every kind
// refuses negative numbers; ranges beyond that come from VarSpec.NonZero and
// VarSpec.Max.
type Kind string

// Kinds of variables. To add one: a case in parse, noun and Accepted, and a
// row in the kinds test.
const (
	KindString   Kind = "string"   // any text; VarSpec.Pattern restricts it
	KindPath     Kind = "path"     // a file system path
	KindSecret   Kind = "secret"   // any text, never printed or echoed in errors
	KindInt      Kind = "int"      // a non-negative integer
	KindFloat    Kind = "float"    // a non-negative number
	KindPort     Kind = "port"     // 1-65535
	KindPercent  Kind = "percent"  // 1-100
	KindBytes    Kind = "bytes"    // a byte count, units allowed (4GiB, 512MiB, 4g)
	KindDuration Kind = "duration" // Go syntax (10s) or a bare number of seconds
	KindBool     Kind = "bool"     // true/false, 1/0, yes/no, on/off
	KindEnum     Kind = "enum"     // one of VarSpec.Values (case-insensitive, stored lower case)
	KindURL      Kind = "url"      // absolute URL; VarSpec.Values are the schemes (http, https when empty)
	KindHost     Kind = "host"     // a host name or an IP address
	KindList     Kind = "list"     // comma-separated, blanks trimmed, empties dropped
	KindKeys     Kind = "keys"     // like list, secret; each at least VarSpec.MinLen long; rows bound to one field add up
)

// Topics group variables in ENVIRONMENT_VARIABLES.md, in this order.
const (
	TopicServer   = "Server and API"
	TopicPool     = "Containers and the default profile"
	TopicCapacity = "Capacity"
	TopicHealth   = "Health checks"
	TopicRuntime  = "Runtime and deployment"
	TopicS3       = "Workspace storage (S3)"
	TopicLogging  = "Logging"
)

// Topics returns the topics in documentation order.
func Topics() []string {
	return []string{TopicServer, TopicPool, TopicCapacity, TopicHealth, TopicRuntime, TopicS3, TopicLogging}
}

// VarSpec describes one environment variable: the one table (vars) drives
// parsing, validation, String/LogValue and the documentation test.
type VarSpec struct {
	Name        string
	Default     string // as the user would write it; "" = unset
	Kind        Kind
	Topic       string
	Description string
	// Values: KindEnum's accepted values; KindURL's accepted schemes.
	Values []string
	// Pattern is a regexp a KindString value must match as a whole.
	Pattern string
	// Accepts overrides the generated text of Accepted.
	Accepts string
	// NonZero refuses 0 for numeric kinds and durations.
	NonZero bool
	// Max is an upper bound for numeric kinds (durations: in seconds); 0 = none.
	Max float64
	// MinLen is the shortest accepted element of a KindKeys value.
	MinLen int
	// Secret values are never printed (String, LogValue, MarshalJSON, errors).
	Secret bool

	// bind returns a pointer to the Config field the value goes to; its
	// type must match the kind (tested): string for string/path/secret/enum/
	// url/host, int for int/port/percent, int64 for bytes, float64, bool,
	// time.Duration, []string for list/keys.
	bind func(*Config) any
}

// Describe returns the variable table, in documentation order within each
// topic.
func Describe() []VarSpec { return vars() }

// Accepted says in words what the variable accepts.
func (s VarSpec) Accepted() string {
	if s.Accepts != "" {
		return s.Accepts
	}
	lower := ">= 0"
	if s.NonZero {
		lower = "> 0"
	}
	upper := ""
	if s.Max > 0 {
		upper = " and <= " + strconv.FormatFloat(s.Max, 'f', -1, 64)
	}
	switch s.Kind {
	case KindString:
		if s.Pattern != "" {
			return "text matching " + s.Pattern
		}
		return "any text"
	case KindPath:
		return "a file system path"
	case KindSecret:
		return "any text (secret, never printed)"
	case KindInt:
		if s.NonZero {
			lower = ">= 1"
		}
		return "an integer " + lower + upper
	case KindFloat:
		return "a number " + lower + upper
	case KindPort:
		return "1-65535"
	case KindPercent:
		return "1-100"
	case KindBytes:
		return "a byte count " + lower + upper + ", or a size such as 512MiB, 4GiB, 4g (binary) or 4GB (decimal)"
	case KindDuration:
		return "a duration " + lower + upper + " such as 10s, 2m30s or 1h, or a number of seconds"
	case KindBool:
		return "true or false"
	case KindEnum:
		return "one of " + strings.Join(s.Values, ", ")
	case KindURL:
		return "an absolute URL with scheme " + strings.Join(s.schemes(), " or ")
	case KindHost:
		return "a host name or an IP address"
	case KindList:
		return "a comma-separated list"
	case KindKeys:
		return fmt.Sprintf("comma-separated keys of at least %d characters each", s.MinLen)
	}
	return string(s.Kind)
}

func (k Kind) noun() string {
	switch k {
	case KindInt:
		return "an integer"
	case KindFloat:
		return "a number"
	case KindPort:
		return "a port"
	case KindPercent:
		return "a percentage"
	case KindBytes:
		return "a size"
	case KindDuration:
		return "a duration"
	case KindBool:
		return "a boolean"
	case KindURL:
		return "a URL"
	case KindHost:
		return "a host"
	case KindEnum:
		return "an accepted value"
	case KindPath:
		return "a path"
	}
	return "valid"
}

func (s VarSpec) schemes() []string {
	if len(s.Values) > 0 {
		return s.Values
	}
	return []string{"http", "https"}
}

// parse turns raw (non-empty) into the kind's Go value. Errors start with
// the variable's name and, except for secrets, quote the value.
func (s VarSpec) parse(raw string) (any, error) {
	bad := func() error {
		return fmt.Errorf("%s: %q is not %s (want %s)", s.Name, raw, s.Kind.noun(), s.Accepted())
	}
	inRange := func(f float64) bool {
		return f >= 0 && !(s.NonZero && f == 0) && !(s.Max > 0 && f > s.Max)
	}
	switch s.Kind {
	case KindString, KindPath:
		if strings.ContainsRune(raw, 0) {
			return nil, bad()
		}
		if s.Pattern != "" && !regexp.MustCompile(`^(?:`+s.Pattern+`)$`).MatchString(raw) {
			return nil, bad()
		}
		return raw, nil
	case KindSecret:
		return raw, nil
	case KindInt:
		n, err := strconv.Atoi(strings.TrimSpace(raw))
		if err != nil || !inRange(float64(n)) {
			return nil, bad()
		}
		return n, nil
	case KindPort, KindPercent:
		hi := 65535
		if s.Kind == KindPercent {
			hi = 100
		}
		n, err := strconv.Atoi(strings.TrimSpace(raw))
		if err != nil || n < 1 || n > hi {
			return nil, bad()
		}
		return n, nil
	case KindFloat:
		f, err := strconv.ParseFloat(strings.TrimSpace(raw), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || !inRange(f) {
			return nil, bad()
		}
		return f, nil
	case KindBytes:
		n, err := ParseBytes(raw)
		if err != nil || !inRange(float64(n)) {
			return nil, bad()
		}
		return n, nil
	case KindDuration:
		d, err := ParseDuration(raw)
		if err != nil || !inRange(d.Seconds()) {
			return nil, bad()
		}
		return d, nil
	case KindBool:
		switch strings.ToLower(strings.TrimSpace(raw)) {
		case "1", "true", "yes", "on":
			return true, nil
		case "0", "false", "no", "off":
			return false, nil
		}
		return nil, bad()
	case KindEnum:
		v := strings.ToLower(strings.TrimSpace(raw))
		if !slices.Contains(s.Values, v) {
			return nil, bad()
		}
		return v, nil
	case KindURL:
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || !slices.Contains(s.schemes(), strings.ToLower(u.Scheme)) || u.Host == "" ||
			u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return nil, bad()
		}
		return strings.TrimRight(u.String(), "/"), nil
	case KindHost:
		v := strings.ToLower(strings.TrimSpace(raw))
		if net.ParseIP(v) == nil && !hostnameRE.MatchString(v) {
			return nil, bad()
		}
		return v, nil
	case KindList:
		return splitList(raw), nil
	case KindKeys:
		keys := splitList(raw)
		for i, k := range keys {
			if len(k) < s.MinLen {
				// Never echo a key, not even a short one.
				return nil, fmt.Errorf("%s: key %d of %d is %d characters long (want at least %d; generate one with: openssl rand -base64 32)",
					s.Name, i+1, len(keys), len(k), s.MinLen)
			}
		}
		return keys, nil
	}
	return nil, fmt.Errorf("%s: unknown kind %q", s.Name, s.Kind)
}

var hostnameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$`)

// assign stores v (from parse) in the field bound to s.
func (s VarSpec) assign(c *Config, v any) error {
	p := s.bind(c)
	ok := true
	switch p := p.(type) {
	case *string:
		*p, ok = v.(string)
	case *int:
		*p, ok = v.(int)
	case *int64:
		*p, ok = v.(int64)
	case *float64:
		*p, ok = v.(float64)
	case *bool:
		*p, ok = v.(bool)
	case *time.Duration:
		*p, ok = v.(time.Duration)
	case *[]string:
		var l []string
		l, ok = v.([]string)
		if s.Kind == KindKeys {
			// API_KEY and API_KEYS add up.
			for _, k := range l {
				if !slices.Contains(*p, k) {
					*p = append(*p, k)
				}
			}
		} else {
			*p = l
		}
	default:
		ok = false
	}
	if !ok {
		return fmt.Errorf("%s: field type %T does not match kind %s (a bug in the config table)", s.Name, p, s.Kind)
	}
	return nil
}

func splitList(raw string) []string {
	var out []string
	for _, part := range strings.Split(raw, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// ParseBytes reads a byte count: a bare integer, or a number with a unit.
// K/M/G/T, KiB/MiB/GiB/TiB and k/m/g/t are binary (Docker's convention);
// KB/MB/GB/TB decimal; B is bytes. Units are case-insensitive.
func ParseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(s)
	}
	num, unit := s[:i], strings.ToLower(strings.TrimSpace(s[i:]))
	mult, ok := map[string]float64{
		"": 1, "b": 1,
		"k": 1 << 10, "ki": 1 << 10, "kib": 1 << 10, "kb": 1e3,
		"m": 1 << 20, "mi": 1 << 20, "mib": 1 << 20, "mb": 1e6,
		"g": 1 << 30, "gi": 1 << 30, "gib": 1 << 30, "gb": 1e9,
		"t": 1 << 40, "ti": 1 << 40, "tib": 1 << 40, "tb": 1e12,
	}[unit]
	if !ok || num == "" {
		return 0, fmt.Errorf("size %q: want a number of bytes or a number with a unit (KiB, MiB, GiB, TiB, KB, MB, GB, TB)", s)
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("size %q: %w", s, err)
		}
		if n > math.MaxInt64/int64(mult) {
			return 0, fmt.Errorf("size %q: too large", s)
		}
		return n * int64(mult), nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	if f*mult >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return int64(f * mult), nil
}

// ParseDuration reads Go duration syntax ("10s", "1m30s") or a bare number
// of seconds ("10", "1.5").
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > math.MaxInt64/float64(time.Second) {
			return 0, fmt.Errorf("duration %q: out of range", s)
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	return time.ParseDuration(s)
}
