//go:build tools

// Package tools pins SuperEdge's lite-apiserver, its node-side proxy with a
// disk cache, so that k8s/build-peers.sh can try to build it from this module
// for the side-by-side benchmark (edge-proxy bench --peers). No code of ours
// lives here.
package tools

import _ "github.com/superedge/superedge/cmd/lite-apiserver"
