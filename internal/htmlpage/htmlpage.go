// Package htmlpage writes the small HTML pages a person sees in a browser
// instead of the API's JSON: the router's errors (a used link, a stopped
// IDE, one still starting) and the landing page at /. API clients keep the
// JSON envelope; WantsHTML tells them apart.
package htmlpage

import (
	"bytes"
	"html/template"
	"mime"
	"net/http"
	"strconv"
	"strings"
)

// WantsHTML reports whether r is a page load by a browser: a GET or HEAD
// whose Accept header names text/html (browsers send it when they navigate;
// fetch and API clients send */* or application/json).
func WantsHTML(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil || (mt != "text/html" && mt != "application/xhtml+xml") {
			continue
		}
		if q, ok := params["q"]; ok {
			if f, err := strconv.ParseFloat(q, 64); err == nil && f <= 0 {
				continue
			}
		}
		return true
	}
	return false
}

// Link is a link on a page.
type Link struct {
	Text, Href string
}

// Page is what a page says. Every field is text (escaped), never HTML.
type Page struct {
	Title string
	// Lines are paragraphs under the title.
	Lines []string
	Links []Link
	// Refresh, when > 0, reloads the page after that many seconds.
	Refresh int
	// Footer is a small line at the bottom (e.g. "idepool 1.2.0").
	Footer string
	// FrameAncestors is the page's CSP frame-ancestors directive
	// ("frame-ancestors 'self' https://lms.example.com"); empty: 'none'.
	FrameAncestors string
}

var tmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{{if gt .Refresh 0}}<meta http-equiv="refresh" content="{{.Refresh}}">{{end}}
<meta name="robots" content="noindex">
<title>{{.Title}}</title>
<style>
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2328;background:#f6f8fa;margin:0}
main{max-width:36rem;margin:12vh auto;padding:2rem;background:#fff;border:1px solid #d0d7de;border-radius:8px}
h1{font-size:1.4rem;margin:0 0 1rem}
p{margin:.5rem 0}
ul{padding-left:1.2rem}
footer{margin-top:1.5rem;color:#656d76;font-size:.85rem}
</style></head>
<body><main>
<h1 id="title">{{.Title}}</h1>
{{range .Lines}}<p>{{.}}</p>
{{end}}{{if .Links}}<ul>{{range .Links}}<li><a href="{{.Href}}">{{.Text}}</a></li>{{end}}</ul>{{end}}
{{if .Footer}}<footer>{{.Footer}}</footer>{{end}}
</main></body></html>
`))

// Write answers p with status. The page runs nothing: its policy allows
// only its own inline style.
func Write(w http.ResponseWriter, r *http.Request, status int, p Page) {
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, p); err != nil {
		// The template and Page are ours; this does not happen.
		http.Error(w, p.Title, status)
		return
	}
	fa := p.FrameAncestors
	if fa == "" {
		fa = "frame-ancestors 'none'"
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "+fa)
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(buf.Bytes())
	}
}
