// etcd for the test suite, at the version the pinned Kubernetes release pins; its
// own module because its dependency versions differ from Kubernetes'.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
