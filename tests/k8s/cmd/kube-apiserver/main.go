// kube-apiserver for the test suite, built from the pinned k8s.io/kubernetes module
// because release binaries cannot be downloaded on the project's machines.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
