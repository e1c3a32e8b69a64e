package idecheck

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Terminal runs command in the shellinabox terminal whose page is pageURL,
// the way its JavaScript does: it loads the page, opens a session with a
// POST to the same URL, sends the keys hex-encoded, and polls the output
// until it contains want (or ctx ends). It returns the output it saw.
// Choose want so that the echo of command does not contain it
// ("echo x-$((6*7))" → "x-42").
func Terminal(ctx context.Context, hc *http.Client, pageURL, command, want string) (string, error) {
	page, err := get(ctx, hc, pageURL)
	if err != nil {
		return "", err
	}
	if !strings.Contains(page, "ShellInABox") {
		return "", fmt.Errorf("GET %s: not shellinabox's page: %.200q", pageURL, page)
	}
	const size = "width=100&height=30"
	// The page's script posts to its URL plus "?"; without the "?" the
	// server answers with the page again.
	postURL := pageURL
	if !strings.Contains(postURL, "?") {
		postURL += "?"
	}
	var out strings.Builder
	// post sends a form; keys are answered with an "OK" page, everything
	// else with JSON {session, data}.
	post := func(form string, keys bool) (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, postURL, strings.NewReader(form))
		if err != nil {
			return "", err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
		req.Header.Set("Cache-Control", "no-cache")
		resp, err := hc.Do(req)
		if err != nil {
			return "", fmt.Errorf("POST %s: %w", postURL, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return "", fmt.Errorf("POST %s: %w", postURL, err)
		}
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("POST %s: HTTP %d: %.200q", postURL, resp.StatusCode, body)
		}
		if keys {
			return "", nil
		}
		var m struct {
			Session string `json:"session"`
			Data    string `json:"data"`
		}
		if err := json.Unmarshal(body, &m); err != nil {
			return "", fmt.Errorf("POST %s: want JSON, got %.200q: %w", postURL, body, err)
		}
		out.WriteString(m.Data)
		return m.Session, nil
	}
	session, err := post(size+"&rooturl="+url.QueryEscape(pageURL), false)
	if err != nil {
		return "", err
	}
	if session == "" {
		return "", fmt.Errorf("POST %s: no session in the answer", pageURL)
	}
	s := "&session=" + url.QueryEscape(session)
	// until polls for output (the server holds each poll until there is
	// some) until done accepts what came so far.
	until := func(what string, done func(string) bool) error {
		for !done(out.String()) {
			if ctx.Err() != nil {
				return fmt.Errorf("terminal %s: %s: %w (%v)", pageURL, what, errNoOutput, ctx.Err())
			}
			if _, err := post(size+s, false); err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("terminal %s: %s: %w (%v)", pageURL, what, errNoOutput, ctx.Err())
				}
				return err
			}
		}
		return nil
	}
	// Keys typed before the shell prints its prompt are lost (readline
	// discards them), as they would be for a person.
	if err := until("a shell prompt", isPrompt); err != nil {
		return out.String(), err
	}
	if _, err := post(size+s+"&keys="+strings.ToUpper(hex.EncodeToString([]byte(command+"\r"))), true); err != nil {
		return out.String(), err
	}
	err = until(fmt.Sprintf("%q", want), func(o string) bool { return strings.Contains(o, want) })
	return out.String(), err
}

// isPrompt reports whether terminal output ends with a shell prompt
// ("$ " or "# ").
func isPrompt(out string) bool {
	return strings.HasSuffix(out, "$ ") || strings.HasSuffix(out, "# ")
}

// errNoOutput is returned when a command's expected output never came.
var errNoOutput = errors.New("expected output did not appear")

func get(ctx context.Context, hc *http.Client, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("GET %s: HTTP %d: %.200q", u, resp.StatusCode, body)
	}
	return string(body), nil
}
