package httpapi

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"

	"github.com/idepool/idepool"
)

type ctxKey struct{}

// reqInfo is filled as the request goes in, so the access log (outermost)
// sees what authentication learnt.
type reqInfo struct {
	id    string
	keyID string
}

func info(ctx context.Context) *reqInfo {
	ri, _ := ctx.Value(ctxKey{}).(*reqInfo)
	if ri == nil {
		return &reqInfo{}
	}
	return ri
}

// RequestID returns the request's id (X-Request-ID), or "".
func RequestID(ctx context.Context) string { return info(ctx).id }

// KeyID returns a short, non-secret name of the API key that authenticated
// the request (the first 8 bytes of its SHA-256, hex), or "".
func KeyID(ctx context.Context) string { return info(ctx).keyID }

func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

func (s *Server) requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-ID")
		if !validRequestID(id) {
			var b [12]byte
			rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		w.Header().Set("X-Request-ID", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, &reqInfo{id: id})))
	})
}

// accessLog logs one line per request: never headers, never the query (the
// router's paths carry one-time tokens there).
func (s *Server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := s.clock.Now()
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		d := s.clock.Now().Sub(start)
		lvl := accessLevel(r, w, rec.status, d)
		if !s.log.Enabled(r.Context(), lvl) {
			return
		}
		s.log.LogAttrs(r.Context(), lvl, "http",
			slog.String("request_id", RequestID(r.Context())),
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", rec.status),
			slog.Int64("bytes", rec.bytes),
			slog.Duration("duration", d),
			slog.String("remote", r.RemoteAddr),
			slog.String("key", KeyID(r.Context())),
		)
	})
}

// recoverPanic turns a panic into 500 INTERNAL_ERROR without internals.
func (s *Server) recoverPanic(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &recorder{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("panic in handler", slog.String("request_id", RequestID(r.Context())),
				slog.String("panic", fmt.Sprint(v)), slog.String("stack", string(debug.Stack())))
			if rec.status == 0 {
				s.writeError(w, r, idepool.Errorf(idepool.EInternal, "internal error"))
			}
		}()
		next.ServeHTTP(rec, r)
	})
}

// recorder notes the status and size; Unwrap keeps Flush and Hijack
// reachable through http.ResponseController (the router needs both).
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Flush and Hijack are direct too, for code that type-asserts.
func (r *recorder) Flush() { http.NewResponseController(r.ResponseWriter).Flush() }

func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err == nil && r.status == 0 {
		r.status = http.StatusSwitchingProtocols
	}
	return c, brw, err
}

// keyring holds the SHA-256 of each API key.
type keyring struct{ hashes [][sha256.Size]byte }

func newKeyring(keys []string) keyring {
	var k keyring
	for _, key := range keys {
		key = strings.TrimSpace(key)
		if key == "" {
			continue
		}
		k.hashes = append(k.hashes, sha256.Sum256([]byte(key)))
	}
	return k
}

// match compares the presented key's hash with every stored hash in
// constant time, with no early exit, and returns the key's short id.
func (k keyring) match(presented string) (string, bool) {
	h := sha256.Sum256([]byte(presented))
	ok := 0
	for i := range k.hashes {
		ok |= subtle.ConstantTimeCompare(h[:], k.hashes[i][:])
	}
	if ok != 1 {
		return "", false
	}
	return hex.EncodeToString(h[:8]), true
}

// presentedKey extracts the key from "Authorization: Bearer <key>" or, as
// the original accepted, a raw "Authorization: <key>". The raw form is kept
// for the original's clients: it reveals nothing more than Bearer does.
func presentedKey(r *http.Request) string {
	v := strings.TrimSpace(r.Header.Get("Authorization"))
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimSpace(v[7:])
	}
	return v
}

func (s *Server) requireKey(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := presentedKey(r)
		if key == "" {
			s.writeError(w, r, idepool.Errorf(idepool.EUnauthorized, "missing API key: send Authorization: Bearer <key>"))
			return
		}
		id, ok := s.keys.match(key)
		if !ok {
			s.writeError(w, r, idepool.Errorf(idepool.EUnauthorized, "invalid API key"))
			return
		}
		info(r.Context()).keyID = id
		next.ServeHTTP(w, r)
	})
}
