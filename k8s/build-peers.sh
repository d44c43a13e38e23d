#!/usr/bin/env bash
# Builds the peers edge-proxy is measured against — OpenYurt's YurtHub — from
# the Go module pinned in k8s/modules/openyurt, into a versioned cache
# directory that later runs reuse. Not part of `make test`: only
# `edge-proxy bench --peers yurthub` needs it.
#
#   k8s/build-peers.sh            build what is missing, print the binaries' directory
#   k8s/build-peers.sh --print    print the directory only (exit 1 if incomplete)
#
# EDGEPROXY_K8S_CACHE picks the cache root (default: ~/.cache/edge-proxy-k8s).
# A cold build takes about 5-10 minutes on 2 cores; a warm one is a no-op.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:-} -mod=mod"

openyurt_version="$(awk '$1 == "require" && $2 == "github.com/openyurtio/openyurt" {print $3}' "$here/modules/openyurt/go.mod")"
root="${EDGEPROXY_K8S_CACHE:-$HOME/.cache/edge-proxy-k8s}"
bin="$root/openyurt-$openyurt_version"

complete() {
	[ -x "$bin/yurthub" ]
}

if [ "${1:-}" = "--print" ]; then
	complete && { echo "$bin"; exit 0; }
	exit 1
fi
if complete; then
	echo "$bin"
	exit 0
fi

log() { echo "k8s/build-peers.sh: $*" >&2; }
command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
mkdir -p "$root"
# One build at a time per cache (shared with k8s/build.sh): a second caller
# waits for the first rather than linking twice on a 2-core machine.
exec 9>"$root/.lock"
flock 9
if complete; then
	echo "$bin"
	exit 0
fi

log "building yurthub $openyurt_version (first run: 5-10 minutes)"
ldflags="-s -w -X github.com/openyurtio/openyurt/pkg/projectinfo.gitVersion=$openyurt_version"
tmp="$bin.tmp"
rm -rf "$tmp" && mkdir -p "$tmp"
(cd "$here/modules/openyurt" && go build -trimpath -pgo=off -ldflags "$ldflags" -o "$tmp/" \
	github.com/openyurtio/openyurt/cmd/yurthub)
rm -rf "$bin" && mv "$tmp" "$bin"
echo "$bin"
