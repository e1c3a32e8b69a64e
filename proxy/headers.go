package proxy

import (
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strings"

	"github.com/idepool/idepool"
)

// frameSourceRE is a CSP host source without path: an optional scheme, an
// optional "*." and a host, an optional port. Nothing that could end the
// directive (';', ',', quotes, blanks) gets through.
var frameSourceRE = regexp.MustCompile(`^(?i)(https?://)?(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:([0-9]{1,5}|\*))?$`)

// CheckFrameAncestors reports what is wrong with FRAME_ANCESTORS: each entry
// must be a CSP host source such as https://app.example.com,
// https://*.example.com or app.example.com:8443.
func CheckFrameAncestors(sources []string) error {
	for _, s := range sources {
		if !frameSourceRE.MatchString(strings.TrimSpace(strings.TrimSuffix(s, "/"))) {
			return idepool.Errorf(idepool.EMisconfigured,
				"FRAME_ANCESTORS: %q is not an origin (want e.g. https://app.example.com or https://*.example.com)", s)
		}
	}
	return nil
}

// frameAncestorsCSP returns "frame-ancestors 'self' <sources>"; invalid
// sources are left out (CheckFrameAncestors refuses them at start-up).
func frameAncestorsCSP(sources []string) string {
	parts := []string{"frame-ancestors 'self'"}
	for _, s := range sources {
		s = strings.TrimSpace(strings.TrimSuffix(s, "/"))
		if frameSourceRE.MatchString(s) {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, " ")
}

// SameSiteMode parses COOKIE_SAMESITE: lax, strict or none (any case);
// anything else, "" included, is 0 (Options then derives the mode).
func SameSiteMode(name string) http.SameSite {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "lax":
		return http.SameSiteLaxMode
	case "strict":
		return http.SameSiteStrictMode
	case "none":
		return http.SameSiteNoneMode
	}
	return 0
}

// ownHeaders are set on the router's own answers (errors, redirects, token
// exchanges): nothing runs in them, and they may be framed exactly where the
// IDE may, so an error shows inside the parent page. Never X-Frame-Options.
func (rt *Router) ownHeaders(h http.Header) {
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'none'; base-uri 'none'; "+rt.frameCSP)
}

// modifyResponse lets the configured parent origins frame a proxied answer
// that has no frame-ancestors policy of its own. A workload's other CSP
// directives stay (a second policy only adds restrictions), and with
// FrameAncestors set its X-Frame-Options goes: CSP frame-ancestors is the
// rule, and a DENY there would defeat the configured embedding.
func (rt *Router) modifyResponse(resp *http.Response) error {
	for _, v := range resp.Header.Values("Content-Security-Policy") {
		if strings.Contains(strings.ToLower(v), "frame-ancestors") {
			return nil
		}
	}
	resp.Header.Add("Content-Security-Policy", rt.frameCSP)
	if len(rt.o.FrameAncestors) > 0 {
		resp.Header.Del("X-Frame-Options")
	}
	return nil
}

// forwardedHTTPS reports whether a trusted proxy in front says the client
// connected with HTTPS.
func (rt *Router) forwardedHTTPS(r *http.Request) bool {
	if !strings.EqualFold(strings.TrimSpace(r.Header.Get("X-Forwarded-Proto")), "https") {
		return false
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	for _, p := range rt.o.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
