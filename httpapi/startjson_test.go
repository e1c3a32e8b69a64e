package httpapi

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/internal/apiwire"
)

// jsonTrickyStrings are strings whose encoding differs between naive
// encoders and encoding/json.
var jsonTrickyStrings = []string{
	"", "plain", "abc123", `quote " and \ backslash`, "tab\tnewline\ncr\r nul\x00 bell\x07 unit\x1f bs\b ff\f",
	"ünïcödé 日本語 😀", "line sep \u2028 para \u2029", "</script>&<>", "bad \xff utf8 \xc3", "del \x7f",
	"\xed\xa0\x80 surrogate", "trailing \xe2\x82", "http://localhost/code/0123456789ab/?token=0123456789abcdef&x=<y>",
	"student-007/", "\u00a0nbsp \ufeffbom \ufffd",
}

// The hand-written start answer must be byte for byte what encoding/json
// writes, over representative and hostile values.
func TestStartResponseJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func() string { return jsonTrickyStrings[rng.IntN(len(jsonTrickyStrings))] }
	zones := []*time.Location{time.UTC, time.FixedZone("x", 5*3600+30*60), time.FixedZone("y", -7*3600), time.Local}
	base := []apiwire.StartResponse{
		{}, // zero: empty URLs, nil routes, zero time
		{
			ID: "0123456789ab", ServiceName: "idepool-0123456789ab", Status: "running", State: idepool.StateRunning, Ready: true,
			URLs:    apiwire.URLs{CodeServer: "http://localhost/code/0123456789ab/?token=abc", Terminal: "http://localhost/code/0123456789ab/?token=abc"},
			Routes:  map[string]string{"code": "http://localhost/code/0123456789ab/?token=abc"},
			Message: "Container assigned from the pre-warmed pool", IsPreWarmed: true, Claim: idepool.ClaimWarm,
			Profile: "default", S3Bucket: "bench-class", S3Prefix: "student-001/", Generation: 3,
			CreatedAt: time.Date(2026, 12, 6, 18, 48, 12, 759123456, time.UTC),
		},
		{Routes: map[string]string{}, Generation: -1, CreatedAt: time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC)},
	}
	for i := range 500 {
		r := apiwire.StartResponse{
			ID: pick(), ServiceName: pick(), Status: pick(), State: idepool.State(pick()), Ready: rng.IntN(2) == 0,
			URLs:    apiwire.URLs{VNC: pick(), CodeServer: pick(), WebServer: pick(), Terminal: pick()},
			Message: pick(), IsPreWarmed: rng.IntN(2) == 0, IsReused: rng.IntN(2) == 0, Claim: idepool.ClaimKind(pick()),
			Profile: pick(), S3Bucket: pick(), S3Prefix: pick(), Generation: rng.Int64() - rng.Int64(),
			CreatedAt: time.Unix(rng.Int64N(250_000_000_000), rng.Int64N(1e9)).In(zones[rng.IntN(len(zones))]),
		}
		if i%7 != 0 {
			r.Routes = map[string]string{}
			for range rng.IntN(6) {
				r.Routes[pick()] = pick()
			}
		}
		base = append(base, r)
	}
	for _, r := range base {
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("encoding/json: %v", err)
		}
		got, err := appendStartResponse(nil, &r)
		if err != nil {
			t.Fatalf("appendStartResponse(%+v): %v", r, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("differs from encoding/json:\n got %s\nwant %s", got, want)
		}
	}
	// A time encoding/json refuses is refused here too (the answer then
	// falls back to encoding/json, which reports it).
	bad := apiwire.StartResponse{CreatedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	if _, err := json.Marshal(bad); err == nil {
		t.Fatal("encoding/json encoded year 10000")
	}
	if _, err := appendStartResponse(nil, &bad); err == nil {
		t.Fatal("appendStartResponse encoded year 10000")
	}
}

func FuzzStartResponseJSON(f *testing.F) {
	for _, s := range jsonTrickyStrings {
		f.Add(s, s, int64(1))
	}
	f.Fuzz(func(t *testing.T, a, b string, n int64) {
		r := apiwire.StartResponse{ID: a, Message: b, S3Prefix: a, URLs: apiwire.URLs{VNC: b}, Routes: map[string]string{a: b, b: a},
			Generation: n, CreatedAt: time.Unix(n%250_000_000_000, 0)}
		want, err := json.Marshal(r)
		got, err2 := appendStartResponse(nil, &r)
		if (err != nil) != (err2 != nil) {
			t.Fatalf("errors differ: %v, %v", err, err2)
		}
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("differs from encoding/json:\n got %s\nwant %s", got, want)
		}
	})
}

func BenchmarkStartResponseJSON(b *testing.B) {
	r := apiwire.StartResponse{
		ID: "0123456789ab", ServiceName: "idepool-0123456789ab", Status: "running", State: idepool.StateRunning, Ready: true,
		URLs:    apiwire.URLs{CodeServer: "http://localhost/code/0123456789ab/?token=0123456789abcdef", Terminal: "http://localhost/code/0123456789ab/?token=0123456789abcdef"},
		Routes:  map[string]string{"code": "http://localhost/code/0123456789ab/?token=0123456789abcdef"},
		Message: "Container assigned from the pre-warmed pool", IsPreWarmed: true, Claim: idepool.ClaimWarm,
		Profile: "default", S3Bucket: "bench-class", S3Prefix: "student-001/", Generation: 1, CreatedAt: time.Now(),
	}
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			json.Marshal(r)
		}
	})
	b.Run("by-hand", func(b *testing.B) {
		for b.Loop() {
			appendStartResponse(make([]byte, 0, 1024), &r)
		}
	})
}

// What the start body's fast decoder accepts, it decodes exactly as
// encoding/json (decodeBytes) does.
func FuzzStartDecodeFast(f *testing.F) {
	for _, s := range []string{
		`{"s3Bucket":"bench-class","s3Prefix":"student-001/","userId":"student-1"}`, `{}`, ` { } `, ``, `null`,
		`{"s3Bucket":"a","idleExempt":true,"profile":"big"}`, `{"idleExempt":false}`, `{"idleExempt":null}`,
		`{"s3Bucket":"a","s3Bucket":"b"}`, `{"S3Bucket":"a"}`, `{"s3Bucket":"a\"b"}`, `{"s3Bucket":"ü日本"}`,
		`{"s3Bucket":"bad` + "\xff" + `"}`, `{"s3Bucket":"a"}x`, `{"s3Bucket":"a",}`, `{"s3Bucket":1}`,
		"{\n\t\"userId\" : \"u\" ,\r\n \"vncPassword\":\"p\"}\n", `{"other":"x","s3Bucket":"a"}`,
		`{"awsAccessKeyId":"A","awsSecretAccessKey":"S","awsSessionToken":"T","s3Region":"r","s3BucketId":"id"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var fast startBody
		if !decodeStartFast(data, &fast) {
			return
		}
		var std startBody
		if err := decodeBytes(data, &std); err != nil {
			t.Fatalf("fast path accepted %q, encoding/json refuses it: %v", data, err)
		}
		if fast != std {
			t.Fatalf("%q: fast %+v, encoding/json %+v", data, fast, std)
		}
	})
}

func TestStartDecodeFastAcceptsTheUsualBody(t *testing.T) {
	var b startBody
	if !decodeStartFast([]byte(`{"s3Bucket":"bench-class","s3Prefix":"student-001/","userId":"student-1","idleExempt":true}`), &b) {
		t.Fatal("the usual body took the slow path")
	}
	if b != (startBody{S3Bucket: "bench-class", S3Prefix: "student-001/", UserID: "student-1", IdleExempt: true}) {
		t.Fatalf("decoded %+v", b)
	}
}
