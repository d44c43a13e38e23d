# The README's two commands: `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint golint typecheck k8s unit integration bench bench-tools dist clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m edgeproxy.demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# The Go side: our client-go programs and the wrapper modules, gofmt'd and vetted.
golint:
	@test -z "$$(gofmt -l k8s)" || { echo "gofmt: these need formatting:"; gofmt -l k8s; exit 1; }
	cd k8s/clients && GOTOOLCHAIN=local go vet ./...

# The real control plane and kubelet (etcd, kube-apiserver, kube-controller-manager,
# kubemark) and our client-go programs, built from their Go modules into
# ~/.cache/edge-proxy-k8s (EDGEPROXY_K8S_CACHE): 5-30 minutes the first time, then reused.
k8s:
	k8s/build.sh

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP) k8s
	$(BIN)/pytest -q tests/integration

# The slowest tests are listed at the end: the run must stay under 15 minutes
# on 2 cores, and this is where to look when it grows. Two workers
# (pytest-xdist): the tests wait on processes and links about half the time,
# so two run side by side in ~10 minutes where one after the other took 13-15.
test: lint golint typecheck k8s
	$(BIN)/pytest -q -n 2 --durations=25

# The benchmark report (bench/README.md): JSON, Markdown and PNG charts in bench/out.
bench: $(STAMP) bench-tools
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/edge-proxy bench --out bench/out

# The baselines: Debian's nginx-light and wrk. Installed when missing and we may
# (root with apt-get); otherwise the suites skip those columns and say how to add them.
bench-tools:
	@if command -v nginx >/dev/null && command -v wrk >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk; \
	else \
		echo "nginx or wrk missing: their columns will be skipped (apt-get install -y nginx-light wrk)"; \
	fi

# The wheel an operator installs on a node (docs/operations.md): dist/edgeproxy-*.whl.
dist: $(STAMP)
	rm -rf dist
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir dist .

clean:
	rm -rf dist $(VENV) .mypy_cache .pytest_cache .ruff_cache
