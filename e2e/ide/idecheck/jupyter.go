package idecheck

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
)

// Jupyter talks to a Jupyter Notebook server under its base URL
// (http://host/code/<id>/ behind idepool, prefix kept).
type Jupyter struct {
	Base   string       // ends with "/"
	Client *http.Client // needs a cookie jar for the XSRF cookie; NewJupyter adds one
	Header http.Header  // sent with every request (e.g. Origin)
}

// NewJupyter returns a client of the server at base; hc is copied and
// given a cookie jar if it has none.
func NewJupyter(base string, hc *http.Client) *Jupyter {
	if hc == nil {
		hc = &http.Client{}
	}
	c := *hc
	if c.Jar == nil {
		c.Jar, _ = cookiejar.New(nil)
	}
	if !strings.HasSuffix(base, "/") {
		base += "/"
	}
	return &Jupyter{Base: base, Client: &c}
}

// Tree loads the notebook's file browser page (which sets the XSRF
// cookie) and checks it is Jupyter's.
func (j *Jupyter) Tree(ctx context.Context) error {
	page, err := j.do(ctx, http.MethodGet, "tree", nil, nil)
	if err != nil {
		return err
	}
	if !strings.Contains(string(page), "Jupyter") {
		return fmt.Errorf("GET %stree: not Jupyter's page: %.200q", j.Base, page)
	}
	return nil
}

// Status returns the server's api/status answer.
func (j *Jupyter) Status(ctx context.Context) (map[string]any, error) {
	var st map[string]any
	_, err := j.do(ctx, http.MethodGet, "api/status", nil, &st)
	return st, err
}

// Run starts a kernel, executes code over the kernel's websocket
// (api/kernels/<id>/channels, the path the notebook UI uses), returns what
// it printed, and shuts the kernel down.
func (j *Jupyter) Run(ctx context.Context, code string) (string, error) {
	if err := j.Tree(ctx); err != nil { // the XSRF cookie
		return "", err
	}
	var k struct {
		ID string `json:"id"`
	}
	if _, err := j.do(ctx, http.MethodPost, "api/kernels", map[string]string{"name": "python3"}, &k); err != nil {
		return "", err
	}
	if k.ID == "" {
		return "", fmt.Errorf("POST %sapi/kernels: no kernel id", j.Base)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		j.do(dctx, http.MethodDelete, "api/kernels/"+k.ID, nil, nil)
	}()

	u, err := url.Parse(j.Base + "api/kernels/" + k.ID + "/channels")
	if err != nil {
		return "", err
	}
	u.Scheme = strings.Replace(u.Scheme, "http", "ws", 1)
	c, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{HTTPClient: j.Client, HTTPHeader: j.Header})
	if err != nil {
		if resp != nil {
			return "", fmt.Errorf("kernel websocket %s: HTTP %d: %w", u, resp.StatusCode, err)
		}
		return "", fmt.Errorf("kernel websocket %s: %w", u, err)
	}
	defer c.CloseNow()
	c.SetReadLimit(8 << 20)

	msgID, session := randomID(), randomID()
	req := map[string]any{
		"header": map[string]any{
			"msg_id": msgID, "session": session, "username": "idecheck",
			"msg_type": "execute_request", "version": "5.3",
		},
		"parent_header": map[string]any{},
		"metadata":      map[string]any{},
		"channel":       "shell",
		"buffers":       []any{},
		"content": map[string]any{
			"code": code, "silent": false, "store_history": false,
			"user_expressions": map[string]any{}, "allow_stdin": false, "stop_on_error": true,
		},
	}
	if err := wsjson.Write(ctx, c, req); err != nil {
		return "", fmt.Errorf("kernel websocket: send execute_request: %w", err)
	}
	var out strings.Builder
	for {
		var m struct {
			Channel      string         `json:"channel"`
			Header       map[string]any `json:"header"`
			ParentHeader map[string]any `json:"parent_header"`
			Content      map[string]any `json:"content"`
		}
		if err := wsjson.Read(ctx, c, &m); err != nil {
			return out.String(), fmt.Errorf("kernel websocket: read: %w", err)
		}
		if m.ParentHeader["msg_id"] != msgID {
			continue
		}
		switch m.Header["msg_type"] {
		case "stream":
			s, _ := m.Content["text"].(string)
			out.WriteString(s)
		case "error":
			return out.String(), fmt.Errorf("kernel: %v: %v", m.Content["ename"], m.Content["evalue"])
		case "status":
			if m.Content["execution_state"] == "idle" {
				c.Close(websocket.StatusNormalClosure, "")
				return out.String(), nil
			}
		}
	}
}

// do sends a request relative to Base; a JSON body gets the XSRF header the
// server wants from cookie-authenticated clients.
func (j *Jupyter) do(ctx context.Context, method, path string, body, out any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequestWithContext(ctx, method, j.Base+path, rd)
	if err != nil {
		return nil, err
	}
	for k, v := range j.Header {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if j.Client.Jar != nil {
		for _, ck := range j.Client.Jar.Cookies(req.URL) {
			if ck.Name == "_xsrf" {
				req.Header.Set("X-XSRFToken", ck.Value)
			}
		}
	}
	resp, err := j.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, req.URL, err)
	}
	if resp.StatusCode/100 != 2 {
		return b, fmt.Errorf("%s %s: HTTP %d: %.300q", method, req.URL, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return b, fmt.Errorf("%s %s: want JSON: %w", method, req.URL, err)
		}
	}
	return b, nil
}

func randomID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}
