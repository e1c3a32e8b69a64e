// Command probe runs inside the network namespace of an IDE container (or
// of idepool) during the isolation end-to-end test and reports, one JSON
// line per target, what a program there gets:
//
//	probe [-key-stdin] tcp://host:port ... http://host:port/path ...
//
// tcp targets: connect, send an HTTP request, read what comes back (a
// relay that refuses the peer resets the connection without a byte).
// http targets: GET with the API key read from stdin (-key-stdin), if any.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

type result struct {
	Target string `json:"target"`
	// Connected: the TCP handshake succeeded.
	Connected bool `json:"connected"`
	// Answer is the start of what the peer sent back ("" for nothing).
	Answer string `json:"answer"`
	// Status is the HTTP status of an http target (0: no HTTP answer).
	Status int    `json:"status"`
	Err    string `json:"err,omitempty"`
}

func main() {
	keyStdin := flag.Bool("key-stdin", false, "read an API key from stdin for http targets")
	flag.Parse()
	var key string
	if *keyStdin {
		line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		key = strings.TrimSpace(line)
	}
	enc := json.NewEncoder(os.Stdout)
	for _, t := range flag.Args() {
		var r result
		switch {
		case strings.HasPrefix(t, "tcp://"):
			r = probeTCP(strings.TrimPrefix(t, "tcp://"))
		case strings.HasPrefix(t, "http://"):
			r = probeHTTP(t, key)
		default:
			r.Err = "unknown target kind"
		}
		r.Target = t
		enc.Encode(r)
	}
}

func probeTCP(addr string) result {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return result{Err: err.Error()}
	}
	defer c.Close()
	r := result{Connected: true}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	_, werr := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr)
	b, rerr := io.ReadAll(io.LimitReader(c, 512))
	r.Answer = string(b)
	if len(b) > 12 && strings.HasPrefix(r.Answer, "HTTP/1.1 ") {
		fmt.Sscanf(r.Answer[9:12], "%d", &r.Status)
	}
	if err := errors.Join(werr, rerr); err != nil {
		r.Err = err.Error()
	}
	return r
}

func probeHTTP(url, key string) result {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return result{Err: err.Error()}
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return result{Err: err.Error()}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return result{Connected: true, Status: resp.StatusCode, Answer: string(b)}
}
