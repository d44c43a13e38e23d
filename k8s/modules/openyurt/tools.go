//go:build tools

// Package tools pins YurtHub, OpenYurt's node-side proxy, so that
// k8s/build-peers.sh can build it from this module for the side-by-side
// benchmark (edge-proxy bench --peers yurthub). No code of ours lives here.
package tools

import _ "github.com/openyurtio/openyurt/cmd/yurthub"
