#!/usr/bin/env bash
# Builds the peers edge-proxy is measured against — OpenYurt's YurtHub and
# SuperEdge's lite-apiserver — from the Go modules pinned in
# k8s/modules/openyurt and k8s/modules/superedge, into versioned cache
# directories that later runs reuse. Not part of `make test`: only
# `edge-proxy bench --peers ...` needs them.
#
#   k8s/build-peers.sh [PEER]           build PEER if missing, print its binary's directory
#   k8s/build-peers.sh --print [PEER]   print the directory only (exit 1 if not built)
#
# PEER is yurthub (the default) or lite-apiserver. EDGEPROXY_K8S_CACHE picks
# the cache root (default: ~/.cache/edge-proxy-k8s). A cold build takes
# about 3-10 minutes on 2 cores; a warm one is a no-op. A failed build
# leaves its output in <cache>/<peer>-<version>.build.log.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:-} -mod=mod"

print_only=false
if [ "${1:-}" = "--print" ]; then
	print_only=true
	shift
fi
peer="${1:-yurthub}"
case "$peer" in
yurthub)
	module=openyurt
	path=github.com/openyurtio/openyurt
	pkg=$path/cmd/yurthub
	;;
lite-apiserver)
	module=superedge
	path=github.com/superedge/superedge
	pkg=$path/cmd/lite-apiserver
	;;
*)
	echo "k8s/build-peers.sh: unknown peer '$peer' (yurthub or lite-apiserver)" >&2
	exit 2
	;;
esac

version="$(awk -v p="$path" '$1 == "require" && $2 == p {print $3}' "$here/modules/$module/go.mod")"
root="${EDGEPROXY_K8S_CACHE:-$HOME/.cache/edge-proxy-k8s}"
bin="$root/$module-$version"

complete() {
	[ -x "$bin/$peer" ]
}

if $print_only; then
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

log "building $peer $version (first run: 3-10 minutes)"
ldflags="-s -w"
if [ "$peer" = yurthub ]; then
	ldflags="$ldflags -X $path/pkg/projectinfo.gitVersion=$version"
fi
tmp="$bin.tmp"
rm -rf "$tmp" && mkdir -p "$tmp"
build_log="$root/$module-$version.build.log"
if ! (cd "$here/modules/$module" && go build -trimpath -pgo=off -ldflags "$ldflags" -o "$tmp/" "$pkg") >"$build_log" 2>&1; then
	log "building $peer $version failed (full output: $build_log):"
	tail -n 20 "$build_log" >&2
	exit 1
fi
rm -rf "$bin" && mv "$tmp" "$bin"
echo "$bin"
