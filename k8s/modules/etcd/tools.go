//go:build tools

// Package tools pins etcd's main package, which k8s/build.sh builds.
package tools

import _ "go.etcd.io/etcd/server/v3/etcdmain"
