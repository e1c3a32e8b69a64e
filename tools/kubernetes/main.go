// Command kube is a multi-call Kubernetes binary (as hyperkube once was): the
// component is chosen by the name it is called by (a symlink) or by its first
// argument. One binary keeps the build to one link of the shared dependency
// graph (~6 minutes on 2 cores instead of one build per component) and one
// cached file.
//
//	kube kube-apiserver --etcd-servers=...
//	ln -s kube kubelet && ./kubelet --config=...
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	_ "time/tzdata" // for timeZone support in CronJob, as cmd/kube-apiserver

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/client-go/plugin/pkg/client/auth" // as cmd/kubectl
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format, as every component's main
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as every component's main
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric, as every component's main
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args
	if name == "kube" {
		if len(args) < 2 {
			usage()
			os.Exit(2)
		}
		name, args = args[1], args[1:]
	}
	// Each component's cobra command parses os.Args[1:] itself.
	os.Args = args
	var command *cobra.Command
	switch name {
	case "kube-apiserver", "apiserver":
		command = apiserver.NewAPIServerCommand()
	case "kube-controller-manager", "controller-manager":
		command = controllermanager.NewControllerManagerCommand()
	case "kube-scheduler", "scheduler":
		command = scheduler.NewSchedulerCommand()
	case "kubelet":
		// The kubelet stops on this context; cmd/kubelet passes
		// context.Background and relies on its own signal handling, which a
		// cancelled context makes prompt.
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		command = kubelet.NewKubeletCommand(ctx)
	case "kube-proxy", "proxy":
		command = proxy.NewProxyCommand()
	case "kubectl":
		logs.GlogSetter(kubectlcmd.GetLogVerbosity(os.Args)) //nolint:errcheck // as cmd/kubectl
		command = kubectlcmd.NewDefaultKubectlCommand()
		if err := cli.RunNoErrOutput(command); err != nil {
			kubectlutil.CheckErr(err)
		}
		return
	case "etcd":
		etcdmain.Main(os.Args)
		return
	default:
		usage()
		os.Exit(2)
	}
	os.Exit(cli.Run(command))
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: kube {kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy|kubectl|etcd} [flags]")
}
