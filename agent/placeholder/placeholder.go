// Package placeholder is the built-in workload idepool runs when a profile
// names none: a read-only page listing the workspace's files, a websocket
// echo at /ws and /healthz. It is not an IDE: no shell, no file writes; the
// page says so and how to get one.
package placeholder

import (
	"context"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/ide"
)

// Options configure a Handler.
type Options struct {
	// Title heads the page (default "idepool workspace").
	Title string
	// OnActivity is called for every user request and websocket frame.
	OnActivity func()
	Logger     *slog.Logger
	// MaxEntries bounds one listing (default 1000).
	MaxEntries int
}

// Handler serves the placeholder. Close ends its websocket sessions.
type Handler struct {
	dir    string
	opts   Options
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ http.Handler = (*Handler)(nil)

// New returns a placeholder serving a listing of dir.
func New(dir string, o Options) *Handler {
	if o.Title == "" {
		o.Title = "idepool workspace"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = 1000
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Handler{dir: dir, opts: o, ctx: ctx, cancel: cancel}
}

// Close ends every websocket session and waits for them.
func (h *Handler) Close() {
	h.cancel()
	h.wg.Wait()
}

func (h *Handler) touch(r *http.Request) {
	if h.opts.OnActivity != nil && (r == nil || r.Header.Get(idepool.ProbeHeader) == "") {
		h.opts.OnActivity()
	}
}

// ServeHTTP serves /healthz, /ws and the listing of any directory.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
		return
	case "/ws":
		h.touch(r)
		h.echo(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h.touch(r)
	h.list(w, r)
}

// echo sends every websocket message back.
func (h *Handler) echo(w http.ResponseWriter, r *http.Request) {
	// The router in front authenticates per container, and an echo reveals
	// nothing, so the origin (the public host, not ours) is not checked.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	h.wg.Add(1)
	defer h.wg.Done()
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	for {
		typ, data, err := c.Read(h.ctx)
		if err != nil {
			return
		}
		h.touch(nil)
		if err := c.Write(h.ctx, typ, data); err != nil {
			return
		}
	}
}

// entry is one row of a listing.
type entry struct {
	Name    string
	Href    string // set for directories
	Kind    string // dir, file, link, other
	Size    int64
	ModTime string
}

type page struct {
	Title     string
	Path      string // shown, relative to the workspace ("/" for the root)
	Parent    string // href of the parent, "" at the root
	Entries   []entry
	Truncated bool
	WSURL     string
	Error     string
	Hints     []ide.Hint
}

var listTmpl = template.Must(template.New("list").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>body{font-family:system-ui,sans-serif;margin:2em}td,th{padding:.2em .8em;text-align:left}td.n{text-align:right}</style>
</head><body>
<h1>{{.Title}}</h1>
<div id="not-an-ide" style="border:1px solid #c90;background:#fff8e0;padding:.5em 1em">
<p><strong>This is idepool's placeholder, not an IDE:</strong> a read-only list of the workspace's files.
No IDE was found on the machine that runs <code>idepool serve</code>, or the profile names none.</p>
<p>To get a real IDE, install one there and restart <code>idepool serve</code> (it picks the first of code-server, JupyterLab, Jupyter Notebook):</p>
<ul>{{range .Hints}}<li>{{.IDE}}: <code>{{.Command}}</code></li>{{end}}</ul>
<p>Or give the profile its own <code>workloads</code> in <code>PROFILES_FILE</code> (see deploy/ide).</p>
</div>
<p>Workspace: <code>{{.Path}}</code>{{if .Parent}} — <a href="{{.Parent}}">up</a>{{end}}</p>
{{if .Error}}<p><strong>{{.Error}}</strong></p>{{else}}
<table><tr><th>Name</th><th>Size</th><th>Modified</th></tr>
{{range .Entries}}<tr><td>{{if .Href}}<a href="{{.Href}}">{{.Name}}/</a>{{else}}{{.Name}}{{if eq .Kind "link"}} →{{end}}{{end}}</td><td class="n">{{if eq .Kind "file"}}{{.Size}}{{end}}</td><td>{{.ModTime}}</td></tr>
{{else}}<tr><td colspan="3"><em>empty</em></td></tr>{{end}}
</table>{{if .Truncated}}<p>(listing truncated)</p>{{end}}{{end}}
<p>Websocket echo: <code id="ws">{{.WSURL}}</code> <span id="st"></span></p>
<script>
(function(){try{var u=new URL(document.getElementById("ws").textContent,location.href);u.protocol=u.protocol==="https:"?"wss:":"ws:";
var s=new WebSocket(u);s.onopen=function(){s.send("ping")};s.onmessage=function(e){document.getElementById("st").textContent="echo: "+e.data;s.close()}}catch(e){}})();
</script>
</body></html>
`))

// prefix returns the validated X-Forwarded-Prefix ("" when absent or odd),
// without a trailing slash.
func prefix(r *http.Request) string {
	p := r.Header.Get("X-Forwarded-Prefix")
	if p == "" || p[0] != '/' || strings.HasPrefix(p, "//") || strings.ContainsAny(p, "\\?#\"'<> \t\r\n") {
		return ""
	}
	return strings.TrimRight(path.Clean(p), "/")
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	pfx := prefix(r)
	rel := strings.Trim(path.Clean("/"+r.URL.Path), "/")
	shown := "/" + rel
	if rel == "" {
		rel = "."
		shown = "/"
	}
	pg := page{Title: h.opts.Title, Path: shown, WSURL: pfx + "/ws", Hints: ide.InstallHints()}
	if rel != "." {
		parent := path.Dir("/" + rel)
		if parent == "/" {
			pg.Parent = pfx + "/"
		} else {
			pg.Parent = pfx + parent + "/"
		}
	}
	entries, truncated, err := h.read(rel)
	status := http.StatusOK
	switch {
	case errors.Is(err, fs.ErrNotExist):
		status, pg.Error = http.StatusNotFound, "not found"
	case err != nil:
		// os.Root refuses paths that leave the workspace (symlinks included).
		status, pg.Error = http.StatusForbidden, "cannot list this path"
	}
	base := pfx + "/"
	if rel != "." {
		base = pfx + "/" + rel + "/"
	}
	for i := range entries {
		if entries[i].Kind == "dir" {
			entries[i].Href = base + url.PathEscape(entries[i].Name) + "/"
		}
	}
	pg.Entries, pg.Truncated = entries, truncated
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	_ = listTmpl.Execute(w, pg)
}

// read lists one directory of the workspace without following symlinks out
// of it: os.Root confines every lookup, and entries are described by Lstat.
func (h *Handler) read(rel string) ([]entry, bool, error) {
	root, err := os.OpenRoot(h.dir)
	if err != nil {
		return nil, false, err
	}
	defer root.Close()
	f, err := root.Open(rel)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	if !fi.IsDir() {
		return nil, false, fs.ErrNotExist
	}
	des, err := f.ReadDir(-1)
	if err != nil {
		return nil, false, err
	}
	slices.SortFunc(des, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	truncated := len(des) > h.opts.MaxEntries
	if truncated {
		des = des[:h.opts.MaxEntries]
	}
	out := make([]entry, 0, len(des))
	for _, de := range des {
		e := entry{Name: de.Name(), Kind: "other"}
		switch t := de.Type(); {
		case t.IsDir():
			e.Kind = "dir"
		case t&fs.ModeSymlink != 0:
			e.Kind = "link"
		case t.IsRegular():
			e.Kind = "file"
		}
		if info, err := de.Info(); err == nil {
			e.Size = info.Size()
			e.ModTime = info.ModTime().UTC().Format(time.RFC3339)
		}
		out = append(out, e)
	}
	return out, truncated, nil
}
