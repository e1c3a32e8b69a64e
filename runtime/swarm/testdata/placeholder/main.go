// Command placeholder is the test image of runtime/swarm: it answers HTTP
// on every route port the runtime gives it (IDEPOOL_PORT_<ROUTE>) and exits
// 0 on SIGTERM. It stands in for the agent so the runtime's tests depend on
// nothing but the engine. On /_auth/forward it plays idepool's ForwardAuth
// endpoint for the Traefik test: 200 with the cookie let=me, else 401.
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var servers []*http.Server
	for _, kv := range os.Environ() {
		k, port, _ := strings.Cut(kv, "=")
		route, ok := strings.CutPrefix(k, "IDEPOOL_PORT_")
		if !ok {
			continue
		}
		srv := &http.Server{Addr: ":" + port, ReadHeaderTimeout: 5 * time.Second,
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/_auth/forward" {
					// A stand-in ForwardAuth endpoint: the cookie let=me passes.
					if c, err := r.Cookie("let"); err == nil && c.Value == "me" {
						return
					}
					// A token exchange: a relative redirect with the cookie.
					if strings.Contains(r.Header.Get("X-Forwarded-Uri"), "token=ok") {
						http.SetCookie(w, &http.Cookie{Name: "let", Value: "me", Path: "/"})
						http.Redirect(w, r, strings.Replace(r.Header.Get("X-Forwarded-Uri"), "?token=ok", "", 1), http.StatusFound)
						return
					}
					http.Error(w, "no", http.StatusUnauthorized)
					return
				}
				fmt.Fprintf(w, "placeholder %s %s %s\n", os.Getenv("IDEPOOL_CONTAINER_ID"), strings.ToLower(route), r.URL.Path)
			})}
		servers = append(servers, srv)
		go func() {
			if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
				fmt.Fprintln(os.Stderr, "placeholder:", err)
				os.Exit(1)
			}
		}()
	}
	<-ctx.Done()
	for _, s := range servers {
		s.Close()
	}
}
