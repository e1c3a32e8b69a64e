package httpapi

import (
	"bytes"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/idepool/idepool/internal/apiwire"
)

// appendStartResponse appends r encoded exactly as encoding/json encodes it
// (same fields, order, omitempty, HTML-safe escaping, sorted map keys);
// TestStartResponseJSON compares the two. Written by hand because every
// claim answers one and encoding/json's reflection was a tenth of the
// handler's CPU. An error (a time json cannot encode) leaves the answer to
// encoding/json, which reports it.
func appendStartResponse(b []byte, r *apiwire.StartResponse) ([]byte, error) {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, r.ID)
	b = append(b, `,"serviceName":`...)
	b = appendJSONString(b, r.ServiceName)
	b = append(b, `,"status":`...)
	b = appendJSONString(b, r.Status)
	b = append(b, `,"state":`...)
	b = appendJSONString(b, string(r.State))
	b = append(b, `,"ready":`...)
	b = strconv.AppendBool(b, r.Ready)
	b = append(b, `,"urls":{`...)
	sep := byte(0)
	for _, f := range [...]struct{ name, v string }{
		{`"vnc":`, r.URLs.VNC}, {`"codeServer":`, r.URLs.CodeServer},
		{`"webServer":`, r.URLs.WebServer}, {`"terminal":`, r.URLs.Terminal},
	} {
		if f.v == "" {
			continue // omitempty
		}
		if sep != 0 {
			b = append(b, sep)
		}
		sep = ','
		b = append(b, f.name...)
		b = appendJSONString(b, f.v)
	}
	b = append(b, `},"routes":`...)
	b = appendStringMap(b, r.Routes)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, r.Message)
	b = append(b, `,"isPreWarmed":`...)
	b = strconv.AppendBool(b, r.IsPreWarmed)
	b = append(b, `,"isReused":`...)
	b = strconv.AppendBool(b, r.IsReused)
	b = append(b, `,"claim":`...)
	b = appendJSONString(b, string(r.Claim))
	b = append(b, `,"profile":`...)
	b = appendJSONString(b, r.Profile)
	b = append(b, `,"s3Bucket":`...)
	b = appendJSONString(b, r.S3Bucket)
	if r.S3Prefix != "" {
		b = append(b, `,"s3Prefix":`...)
		b = appendJSONString(b, r.S3Prefix)
	}
	b = append(b, `,"generation":`...)
	b = strconv.AppendInt(b, r.Generation, 10)
	b = append(b, `,"createdAt":"`...)
	// time.Time's MarshalJSON is its AppendText (strict RFC 3339) quoted;
	// that text never needs escaping.
	b, err := r.CreatedAt.AppendText(b)
	if err != nil {
		return nil, err
	}
	return append(b, `"}`...), nil
}

// appendStringMap appends m as encoding/json does: null when nil, keys sorted.
func appendStringMap(b []byte, m map[string]string) []byte {
	if m == nil {
		return append(b, "null"...)
	}
	var buf [8]string
	keys := buf[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		b = appendJSONString(b, m[k])
	}
	return append(b, '}')
}

// appendJSONString appends s as encoding/json encodes a string with its
// default HTML-safe escaping: \" \\ \b \f \n \r \t, other controls and
// < > & as \u00XX, invalid UTF-8 as \ufffd, U+2028 and U+2029 escaped.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// decodeStartFast decodes the usual start body, one flat object of the
// start's own fields with plain string values (no escapes, valid UTF-8)
// and a true or false idleExempt, without reflection. ok is false for
// anything else (other keys, which encoding/json matches case-insensitively
// or ignores; escapes; null; numbers; trailing data; an empty body), which
// decodeBytes then decodes with encoding/json: what this accepts, it decodes
// exactly as encoding/json does (FuzzStartDecodeFast checks).
func decodeStartFast(data []byte, b *startBody) bool {
	i := skipSpace(data, 0)
	if i == len(data) || data[i] != '{' {
		return false
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return skipSpace(data, i+1) == len(data)
	}
	for {
		key, j, ok := plainString(data, i)
		if !ok {
			return false
		}
		i = skipSpace(data, j)
		if i == len(data) || data[i] != ':' {
			return false
		}
		i = skipSpace(data, i+1)
		if key == "idleExempt" {
			switch {
			case bytes.HasPrefix(data[i:], []byte("true")):
				b.IdleExempt, i = true, i+4
			case bytes.HasPrefix(data[i:], []byte("false")):
				b.IdleExempt, i = false, i+5
			default:
				return false
			}
		} else {
			f := b.field(key)
			if f == nil {
				return false
			}
			v, j, ok := plainString(data, i)
			if !ok {
				return false
			}
			*f, i = v, j
		}
		i = skipSpace(data, i)
		if i == len(data) {
			return false
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case '}':
			return skipSpace(data, i+1) == len(data)
		default:
			return false
		}
	}
}

// field returns the string field named exactly key, or nil.
func (b *startBody) field(key string) *string {
	switch key {
	case "s3Bucket":
		return &b.S3Bucket
	case "s3Region":
		return &b.S3Region
	case "s3BucketId":
		return &b.S3BucketID
	case "s3Prefix":
		return &b.S3Prefix
	case "userId":
		return &b.UserID
	case "awsAccessKeyId":
		return &b.AWSAccessKeyID
	case "awsSecretAccessKey":
		return &b.AWSSecretAccessKey
	case "awsSessionToken":
		return &b.AWSSessionToken
	case "vncPassword":
		return &b.VNCPassword
	case "profile":
		return &b.Profile
	}
	return nil
}

// plainString reads the JSON string at data[i] if it has no escape and no
// control character and is valid UTF-8; it returns the string and the
// index after its closing quote.
func plainString(data []byte, i int) (string, int, bool) {
	if i >= len(data) || data[i] != '"' {
		return "", 0, false
	}
	end := bytes.IndexByte(data[i+1:], '"')
	if end < 0 {
		return "", 0, false
	}
	v := data[i+1 : i+1+end]
	ascii := true
	for _, c := range v {
		if c < 0x20 || c == '\\' {
			return "", 0, false
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	if !ascii && !utf8.Valid(v) {
		return "", 0, false
	}
	return string(v), i + 2 + end, true
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}
