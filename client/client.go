// Package client is a Go client of idepool's REST API, used by the CLI and by
// end-to-end tests. Errors from the server's envelope come back as *Error, so
// callers can branch on the code. The API key is sent only in the
// Authorization header; it never appears in an error, a URL or String().
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/idepool/idepool"
)

// Defaults.
const (
	DefaultURL     = "http://localhost:3001"
	DefaultTimeout = 30 * time.Second
	// maxBody bounds what is read of one answer.
	maxBody = 16 << 20
)

// Options configure a Client; zero values get defaults.
type Options struct {
	// HTTPClient replaces the default client (whose transport has dial,
	// TLS and idle timeouts). Its Timeout must be zero for Events to work:
	// per-call deadlines come from Timeout below.
	HTTPClient *http.Client
	// Timeout bounds each call but Events (default 30 s). A start that
	// waits gets its wait on top.
	Timeout time.Duration
	// EventIdleTimeout ends an event stream that sends nothing, not even the
	// server's heartbeat, for this long (default 45 s).
	EventIdleTimeout time.Duration
	// UserAgent is sent with every request (default "idepool-client").
	UserAgent string
}

// Client calls one idepool server. It is safe for concurrent use.
type Client struct {
	base    *url.URL
	key     string
	hc      *http.Client
	timeout time.Duration
	idle    time.Duration
	ua      string
}

// New returns a client of the server at baseURL ("http://host:3001") that
// authenticates with apiKey (may be empty for Health).
func New(baseURL, apiKey string, o Options) (*Client, error) {
	if baseURL == "" {
		baseURL = DefaultURL
	}
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server URL %q: want http(s)://host[:port]", baseURL)
	}
	if u.User != nil {
		return nil, fmt.Errorf("server URL: credentials in the URL are not supported; use the API key")
	}
	u.RawQuery, u.Fragment = "", ""
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.EventIdleTimeout <= 0 {
		o.EventIdleTimeout = 45 * time.Second
	}
	if o.UserAgent == "" {
		o.UserAgent = "idepool-client"
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   8,
			ExpectContinueTimeout: time.Second,
		}}
	}
	return &Client{base: u, key: apiKey, hc: hc, timeout: o.Timeout, idle: o.EventIdleTimeout, ua: o.UserAgent}, nil
}

// String names the server, never the key.
func (c *Client) String() string { return "idepool client of " + c.base.String() }

// GoString keeps %#v from printing the key.
func (c *Client) GoString() string { return c.String() }

// BaseURL is the server's URL.
func (c *Client) BaseURL() string { return c.base.String() }

// Error is an answer of the server other than 2xx, decoded from its error
// envelope {error:{code,message,details},timestamp,path}.
type Error struct {
	// Status is the HTTP status.
	Status int
	// Code is the envelope's code ("CONTAINER_NOT_FOUND"); when the answer
	// was not an envelope (a proxy's page), one derived from Status.
	Code      idepool.Code
	Message   string
	Details   map[string]any
	Path      string
	RequestID string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (HTTP %d %s)", e.Message, e.Status, e.Code)
}

// IsCode reports whether err is an *Error with one of codes.
func IsCode(err error, codes ...idepool.Code) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	for _, c := range codes {
		if e.Code == c {
			return true
		}
	}
	return false
}

// IsNotFound reports whether the server said the container (or route) does
// not exist.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// IsUnauthorized reports whether the API key was missing or refused.
func IsUnauthorized(err error) bool {
	var e *Error
	return errors.As(err, &e) && (e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden)
}

// IsCapacity reports whether a start was refused for lack of capacity or
// by a limit.
func IsCapacity(err error) bool {
	return IsCode(err, idepool.ECapacity, idepool.EQueueFull, idepool.ELimitExceeded)
}

// codeForStatus names a non-envelope answer: the inverse of the server's
// status table (idepool.CodeForStatus), except that a bare 502 comes from a
// proxy in front of the server (the server's own 502 carries BAD_GATEWAY in
// an envelope), so it means the server is unavailable.
func codeForStatus(status int) idepool.Code {
	if status == http.StatusBadGateway {
		return idepool.EUnavailable
	}
	return idepool.CodeForStatus(status)
}

// decodeError turns a non-2xx answer into *Error.
func decodeError(res *http.Response, body []byte) *Error {
	e := &Error{Status: res.StatusCode, RequestID: res.Header.Get("X-Request-ID")}
	var env struct {
		Error *struct {
			Code    idepool.Code   `json:"code"`
			Message string         `json:"message"`
			Details map[string]any `json:"details"`
		} `json:"error"`
		Path string `json:"path"`
	}
	if json.Unmarshal(body, &env) == nil && env.Error != nil && env.Error.Code != "" {
		e.Code, e.Message, e.Details, e.Path = env.Error.Code, env.Error.Message, env.Error.Details, env.Path
		return e
	}
	e.Code = codeForStatus(res.StatusCode)
	e.Message = http.StatusText(res.StatusCode)
	if e.Message == "" {
		e.Message = "HTTP " + strconv.Itoa(res.StatusCode)
	}
	// A short plain-text answer (a proxy's) helps; HTML does not.
	if t := strings.TrimSpace(string(body)); t != "" && len(t) < 200 && !strings.HasPrefix(t, "<") {
		e.Message += ": " + t
	}
	return e
}

// ConnError says the server could not be reached at all.
type ConnError struct {
	URL string
	Err error
}

func (e *ConnError) Error() string { return "cannot reach idepool at " + e.URL + ": " + e.Err.Error() }
func (e *ConnError) Unwrap() error { return e.Err }

func (c *Client) newRequest(ctx context.Context, method, path string, q url.Values, body any) (*http.Request, error) {
	u := *c.base
	u.Path = strings.TrimRight(c.base.Path, "/") + path
	if len(q) > 0 {
		u.RawQuery = q.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.ua)
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	return req, nil
}

// do sends one request and decodes a 2xx JSON answer into out. It returns
// the status.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body, out any, extra time.Duration) (int, error) {
	res, b, err := c.roundTrip(ctx, method, path, q, body, extra)
	if err != nil {
		return 0, err
	}
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return res.StatusCode, decodeError(res, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return res.StatusCode, fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return res.StatusCode, nil
}

// roundTrip sends one request and reads its whole (bounded) answer.
func (c *Client) roundTrip(parent context.Context, method, path string, q url.Values, body any, extra time.Duration) (*http.Response, []byte, error) {
	limit := c.timeout + extra
	ctx, cancel := context.WithTimeout(parent, limit)
	defer cancel()
	req, err := c.newRequest(ctx, method, path, q, body)
	if err != nil {
		return nil, nil, err
	}
	res, err := c.hc.Do(req)
	if err != nil {
		if parent.Err() == nil && ctx.Err() != nil {
			return nil, nil, &ConnError{URL: c.base.String(), Err: fmt.Errorf("no answer to %s %s within %s: %w", method, path, limit, context.DeadlineExceeded)}
		}
		return nil, nil, c.connError(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxBody))
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	return res, b, nil
}

// connError strips the URL (which holds nothing secret, but is noisy) from
// a transport error, keeping context errors recognisable.
func (c *Client) connError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &ConnError{URL: c.base.String(), Err: err}
}
