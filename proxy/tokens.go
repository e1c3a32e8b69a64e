package proxy

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/idepool/idepool"
)

// cookiePrefix names route cookies: idepool_<container id>.
const cookiePrefix = "idepool_"

// maxTokens bounds the token store; Mint fails beyond it (after a sweep).
const maxTokens = 100_000

// CookieName returns the route cookie's name for a container.
func CookieName(id string) string { return cookiePrefix + id }

// Mint returns a fresh one-time token for (id, generation), valid for
// TokenTTL and redeemable once.
func (rt *Router) Mint(id string, generation int64) (string, error) {
	if !idepool.ValidID(id) {
		return "", idepool.Errorf(idepool.EInvalid, "invalid container id %q", id)
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("mint route token: %w", err)
	}
	tok := base64.RawURLEncoding.EncodeToString(b[:])
	now := rt.clock.Now()
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if now.Sub(rt.lastSweep) > rt.o.TokenTTL || len(rt.tokens) >= maxTokens {
		for k, e := range rt.tokens {
			if !now.Before(e.expires) {
				delete(rt.tokens, k)
			}
		}
		rt.lastSweep = now
	}
	if len(rt.tokens) >= maxTokens {
		return "", idepool.Errorf(idepool.EUnavailable, "too many unredeemed route tokens")
	}
	rt.tokens[tok] = tokenEntry{id: id, generation: generation, expires: now.Add(rt.o.TokenTTL)}
	return tok, nil
}

// redeem consumes tok if it is valid for c. A token is gone after its first
// use, whatever the outcome.
func (rt *Router) redeem(tok string, c idepool.Container) bool {
	if tok == "" {
		return false
	}
	now := rt.clock.Now()
	rt.mu.Lock()
	e, ok := rt.tokens[tok]
	delete(rt.tokens, tok)
	rt.mu.Unlock()
	return ok && e.id == c.ID && e.generation == c.Generation && now.Before(e.expires)
}

// signCookie returns "<id>.<generation>.<expiry unix>.<hmac>".
func (rt *Router) signCookie(id string, generation int64, expires time.Time) string {
	payload := id + "." + strconv.FormatInt(generation, 10) + "." + strconv.FormatInt(expires.Unix(), 10)
	return payload + "." + rt.mac(payload)
}

func (rt *Router) mac(payload string) string {
	m := hmac.New(sha256.New, rt.secret)
	m.Write([]byte("idepool-route-cookie-v1|"))
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// verified returns what value's signature vouches for: from the cache, or
// checked (HMAC, constant-time compare) and then cached.
func (rt *Router) verified(value string) (verifiedCookie, error) {
	if v, ok := rt.verifiedCookies.get(value); ok {
		return v, nil
	}
	i := strings.LastIndexByte(value, '.')
	if i < 0 {
		return verifiedCookie{}, errors.New("malformed")
	}
	payload, sig := value[:i], value[i+1:]
	if subtle.ConstantTimeCompare([]byte(sig), []byte(rt.mac(payload))) != 1 {
		return verifiedCookie{}, errors.New("bad signature")
	}
	parts := strings.Split(payload, ".")
	if len(parts) != 3 {
		return verifiedCookie{}, errors.New("malformed")
	}
	gen, err1 := strconv.ParseInt(parts[1], 10, 64)
	exp, err2 := strconv.ParseInt(parts[2], 10, 64)
	if err1 != nil || err2 != nil {
		return verifiedCookie{}, errors.New("malformed")
	}
	v := verifiedCookie{id: parts[0], generation: gen, expires: time.Unix(exp, 0)}
	rt.verifiedCookies.put(value, v)
	return v, nil
}

// verifyCookie checks value's signature, container, generation and expiry.
func (rt *Router) verifyCookie(value string, c idepool.Container) error {
	v, err := rt.verified(value)
	switch {
	case err != nil:
		return err
	case v.id != c.ID:
		return errors.New("another container's cookie")
	case v.generation != c.Generation:
		return errors.New("generation mismatch")
	case !rt.clock.Now().Before(v.expires):
		return errors.New("expired")
	}
	return nil
}

// cookieOK reports whether r carries a valid route cookie for c.
func (rt *Router) cookieOK(r *http.Request, c idepool.Container) bool {
	for _, ck := range r.CookiesNamed(CookieName(c.ID)) {
		if rt.verifyCookie(ck.Value, c) == nil {
			return true
		}
	}
	return false
}

func (rt *Router) cookie(c idepool.Container, secure bool) *http.Cookie {
	exp := rt.clock.Now().Add(rt.o.CookieTTL)
	return &http.Cookie{
		Name:     CookieName(c.ID),
		Value:    rt.signCookie(c.ID, c.Generation, exp),
		Path:     "/",
		MaxAge:   int(rt.o.CookieTTL.Seconds()),
		HttpOnly: true,
		// Browsers drop SameSite=None cookies that are not Secure.
		Secure:   secure || rt.o.CookieSecure || rt.httpsPublic || rt.o.CookieSameSite == http.SameSiteNoneMode,
		SameSite: rt.o.CookieSameSite,
	}
}

// RouteURLs returns route name → "<PublicURL>/<route>/<id>/?token=<t>", a
// fresh one-time token per route (implements httpapi.URLs).
func (rt *Router) RouteURLs(c idepool.Container, profile idepool.Profile) (map[string]string, error) {
	out := make(map[string]string, len(profile.Routes))
	for _, r := range profile.Routes {
		tok, err := rt.Mint(c.ID, c.Generation)
		if err != nil {
			return nil, err
		}
		out[r.Name] = rt.base(r.Name, c.ID) + "?token=" + tok
	}
	return out, nil
}

// BaseURLs returns route name → "<PublicURL>/<route>/<id>/" without a token
// (implements httpapi.URLs).
func (rt *Router) BaseURLs(c idepool.Container, profile idepool.Profile) map[string]string {
	out := make(map[string]string, len(profile.Routes))
	for _, r := range profile.Routes {
		out[r.Name] = rt.base(r.Name, c.ID)
	}
	return out
}

func (rt *Router) base(route, id string) string {
	return rt.o.PublicURL + "/" + route + "/" + id + "/"
}

// cookieSignedFor reports whether r carries an unexpired cookie that this
// router signed for container id, whatever its generation (the container
// itself may be gone: see redirectReplaced).
func (rt *Router) cookieSignedFor(r *http.Request, id string) bool {
	for _, ck := range r.CookiesNamed(CookieName(id)) {
		v, err := rt.verified(ck.Value)
		if err == nil && v.id == id && rt.clock.Now().Before(v.expires) {
			return true
		}
	}
	return false
}
