// Command etcd is etcd's own server entry point, built from pinned module versions.
//
// Debian's etcd 3.4 lacks watch progress notifications, without which the apiserver refuses
// streaming-list watches; 3.6 from the module proxy has them.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
