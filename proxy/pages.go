package proxy

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/internal/htmlpage"
)

// history is implemented by a Backend that remembers stopped containers
// (pool.Manager), so a student's page can say "stopped" rather than "no
// such IDE".
type history interface {
	Get(ctx context.Context, id string) (idepool.Container, error)
}

// ctxForwarded carries ForwardAuth's X-Forwarded-Uri, parsed.
type ctxForwarded struct{}

// pageRefresh is how often the "starting" page reloads itself.
const pageRefresh = 3

// page is what a person who opened a route in a browser reads instead of
// the JSON envelope: what happened and what to do, in plain words. It
// names no token, key or internal detail.
func (rt *Router) page(r *http.Request, err error) (int, htmlpage.Page) {
	u := r.URL
	if fu, ok := r.Context().Value(ctxForwarded{}).(*url.URL); ok {
		u = fu // ForwardAuth: the URL the user asked Traefik for
	}
	code := idepool.ErrorCode(err)
	p := htmlpage.Page{FrameAncestors: rt.frameCSP}
	back := "Go back to your course page and open the IDE from there."
	switch code {
	case idepool.EUnauthorized:
		if u.Query().Has("token") {
			p.Title = "This link was already used"
			p.Lines = []string{"A link to an IDE opens it once, within a few minutes, in one browser. This one was used already or has expired.",
				back + " You will get a new link."}
		} else {
			p.Title = "This IDE needs its link"
			p.Lines = []string{"This browser has not opened this IDE before (or its access has expired).", back}
		}
	case idepool.EUnavailable:
		p.Title = "This IDE is starting"
		p.Lines = []string{"It will be ready in a moment. This page reloads by itself."}
		p.Refresh = pageRefresh
	case idepool.EBadGateway:
		p.Title = "This IDE is not answering yet"
		p.Lines = []string{"If it was just started, it will be ready in a moment. This page reloads by itself.",
			"If this lasts more than a minute: " + back}
		p.Refresh = pageRefresh
	case idepool.ENotFound:
		p.Title, p.Lines = rt.notFoundPage(r.Context(), u, back)
	default:
		p.Title = "Page not found"
		p.Lines = []string{"There is nothing at this address.", back}
	}
	return code.HTTPStatus(), p
}

// notFoundPage tells a stopped IDE from one that never existed here.
func (rt *Router) notFoundPage(ctx context.Context, u *url.URL, back string) (string, []string) {
	_, id, _, _ := parsePath(u.EscapedPath())
	var c idepool.Container
	found := false
	if idepool.ValidID(id) {
		if c, found = rt.o.Backend.Lookup(id); !found {
			if h, ok := rt.o.Backend.(history); ok {
				ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				got, err := h.Get(ctx, id)
				cancel()
				c, found = got, err == nil
			}
		}
	}
	if !found {
		return "There is no IDE at this address", []string{"The link may be incomplete, or the IDE was removed a while ago.", back}
	}
	switch c.State {
	case idepool.StateStopping, idepool.StateStopped:
		why := "It was stopped."
		switch c.StopReason {
		case idepool.ReasonInactivity:
			why = "It was stopped after a while without activity."
		case idepool.ReasonMaxAge:
			why = "It was stopped because it reached its maximum running time."
		}
		return "This IDE was stopped", []string{why + " The files it saved are kept in your workspace.", back + " A new IDE starts with your files."}
	case idepool.StateFailed:
		return "This IDE stopped working", []string{back + " A new IDE starts with your files."}
	}
	// Warm or still being created: not anyone's IDE yet.
	return "There is no IDE at this address", []string{"The link may be incomplete.", back}
}

// writePage answers err as a page for a browser.
func (rt *Router) writePage(w http.ResponseWriter, r *http.Request, err error) {
	status, p := rt.page(r, err)
	htmlpage.Write(w, r, status, p)
}
