// kube-scheduler for the test suite, built from the pinned k8s.io/kubernetes module: pods
// are bound to the test kubelet's Nodes as a real cluster binds them, zones included.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	os.Exit(cli.Run(app.NewSchedulerCommand()))
}
