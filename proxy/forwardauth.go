package proxy

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/idepool/idepool"
)

// ForwardAuth returns the handler for Traefik's ForwardAuth middleware
// (GET /_auth/forward, mounted without API-key auth). Traefik sends
// X-Forwarded-Method/-Proto/-Host/-Uri and the client's Cookie header:
//
//   - a valid cookie for the container in X-Forwarded-Uri (/<route>/<id>/...) → 200;
//   - a valid one-time token query parameter → 302 to the same URI without the
//     token, with Set-Cookie (Traefik passes non-2xx answers to the client);
//   - a container replaced (pool.Manager.Replace, a lost node), with a valid
//     cookie of the old one → 307 to the new one's route with a one-time
//     token, as the built-in router answers;
//   - an unknown or unclaimed container → 404, one a cold start is still
//     creating → 503; anything else → 401.
//
// Traffic through Traefik is reported to Touch by its authorised requests,
// at most once per TouchEvery per container, as the router's own
// (websocket frames there are invisible to idepool).
// HeaderForwardAuth is set on every ForwardAuth answer (Traefik passes a
// refusal's headers on to the client).
const HeaderForwardAuth = "X-Idepool-Forward-Auth"

func (rt *Router) ForwardAuth() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Marks answers as idepool's, so a probe through Traefik can tell
		// "Traefik routes this container here" from Traefik's own 404.
		w.Header().Set(HeaderForwardAuth, "1")
		uri := r.Header.Get("X-Forwarded-Uri")
		u, err := url.ParseRequestURI(uri)
		if uri == "" || err != nil {
			rt.writeError(w, r, idepool.Errorf(idepool.EUnauthorized, "missing or invalid X-Forwarded-Uri"))
			return
		}
		// A page for a refusal speaks of the user's URL, not of this one.
		r = r.WithContext(context.WithValue(r.Context(), ctxForwarded{}, u))
		t, err := rt.resolve(u.EscapedPath())
		if err != nil {
			// Traefik may still route a replaced container for a moment
			// (its provider refreshes every few seconds): its user is sent
			// on here as the built-in router would.
			fr := r.Clone(r.Context())
			fr.URL = u
			if rt.redirectReplaced(w, fr, err) {
				return
			}
			rt.writeError(w, r, err)
			return
		}
		if q := u.Query(); q.Has("token") {
			// The caller is the proxy in front, so its X-Forwarded-Proto is
			// believed (a lie could only make the liar's own cookie Secure).
			secure := strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
			clean := stripToken(u)
			if t.rest == "" {
				clean = stripToken(&url.URL{Path: u.Path + "/", RawQuery: u.RawQuery})
			}
			rt.exchange(w, r, t.container, q.Get("token"), secure, clean)
			return
		}
		if !rt.cookieOK(r, t.container) {
			rt.writeError(w, r, idepool.Errorf(idepool.EUnauthorized, "no valid route cookie for container %s", t.container.ID))
			return
		}
		rt.touch(t.container.ID)
		w.WriteHeader(http.StatusOK)
	})
}
