// Command pause is the pod sandbox's process: it holds the pod's namespaces
// and reaps orphans until it is told to stop, as Kubernetes' pause.c does.
// It is built here because the registry.k8s.io image cannot be pulled; a
// static Go binary in a FROM-scratch image stands in for it.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		// As PID 1 of the pod, reap every exited child so none stays a zombie.
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
