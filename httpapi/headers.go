package httpapi

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/idepool/idepool"
)

// API answers are JSON for programs: nothing in them may run, be framed or
// leak a Referer.
const apiCSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// corsAllowHeaders are the request headers a cross-origin caller may send.
const corsAllowHeaders = "Authorization, Content-Type, X-Request-ID"

// corsExposeHeaders are the answer headers a cross-origin caller may read.
const corsExposeHeaders = "X-Request-ID, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After"

// securityHeaders sets the API's security headers.
func securityHeaders(h http.Header) {
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", apiCSP)
	h.Set("Referrer-Policy", "no-referrer")
}

// CheckOrigins reports what is wrong with CORS_ORIGINS: each entry must be
// an exact origin, scheme://host[:port] with http or https. "*" is refused:
// the original answered any origin, credentials included.
func CheckOrigins(origins []string) error {
	for _, o := range origins {
		if _, err := normalizeOrigin(o); err != nil {
			return err
		}
	}
	return nil
}

func normalizeOrigin(o string) (string, error) {
	o = strings.TrimSpace(o)
	if o == "*" || strings.EqualFold(o, "null") {
		return "", idepool.Errorf(idepool.EMisconfigured, "CORS_ORIGINS: %q is not allowed: list exact origins such as https://app.example.com", o)
	}
	u, err := url.Parse(strings.TrimSuffix(o, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || strings.Contains(u.Host, "*") {
		return "", idepool.Errorf(idepool.EMisconfigured, "CORS_ORIGINS: %q is not an origin (want scheme://host[:port], e.g. https://app.example.com)", o)
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// corsPolicy answers cross-origin requests from the configured origins.
// It never allows credentials: the API authenticates with bearer keys,
// which a page sends explicitly, so cookies have no business here.
type corsPolicy struct {
	origins map[string]bool
}

// newCORS returns nil (no CORS headers at all) for an empty list. Invalid
// entries are left out (CheckOrigins refuses them at start-up).
func newCORS(origins []string) *corsPolicy {
	p := &corsPolicy{origins: map[string]bool{}}
	for _, o := range origins {
		if n, err := normalizeOrigin(o); err == nil {
			p.origins[n] = true
		}
	}
	if len(p.origins) == 0 {
		return nil
	}
	return p
}

func (p *corsPolicy) allowed(origin string) bool {
	return origin != "" && p.origins[strings.ToLower(origin)]
}

// apiHeaders sets the headers of every API answer: security headers, and
// CORS for an allowed Origin.
func (s *Server) apiHeaders(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	securityHeaders(h)
	if s.cors == nil {
		return
	}
	h.Add("Vary", "Origin")
	if origin := r.Header.Get("Origin"); s.cors.allowed(origin) {
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
	}
}

// preflight answers a CORS preflight for an API route; it reports false
// when the request is not one (dispatch then serves it as usual).
func (s *Server) preflight(w http.ResponseWriter, r *http.Request) bool {
	want := r.Header.Get("Access-Control-Request-Method")
	if s.cors == nil || r.Method != http.MethodOptions || r.Header.Get("Origin") == "" || want == "" {
		return false
	}
	methods := s.apiMethods(r, want)
	if methods == nil {
		return false
	}
	s.apiHeaders(w, r)
	h := w.Header()
	h.Add("Vary", "Access-Control-Request-Method")
	h.Add("Vary", "Access-Control-Request-Headers")
	if !s.cors.allowed(r.Header.Get("Origin")) {
		s.writeError(w, r, &idepool.Error{Code: idepool.EForbidden,
			Message: fmt.Sprintf("origin %q is not allowed (CORS_ORIGINS)", truncate(r.Header.Get("Origin"), 100))})
		return true
	}
	h.Set("Access-Control-Allow-Methods", strings.Join(methods, ", "))
	h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
	h.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
	return true
}

// apiMethods returns the methods of API routes at r's path when want is
// one of them, else nil.
func (s *Server) apiMethods(r *http.Request, want string) []string {
	var out []string
	found := false
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); s.apiPatterns[pattern] {
			out = append(out, m)
			found = found || m == want
		}
	}
	if !found {
		return nil
	}
	return out
}
