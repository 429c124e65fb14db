// kube-controller-manager for the test suite, built from the pinned k8s.io/kubernetes module
// because release binaries cannot be downloaded on the project's machines. The tests run
// the EndpointSlice, Deployment, ReplicaSet and garbage-collector controllers from it.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
