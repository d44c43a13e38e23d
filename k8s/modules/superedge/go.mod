// Wrapper module: builds SuperEdge's lite-apiserver at one release for the
// side-by-side benchmark. No code of ours lives here; see k8s/build-peers.sh.
module edgeproxy.test/k8s/modules/superedge

go 1.16

require github.com/superedge/superedge v0.9.0
