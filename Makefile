# kubefn: two commands on a fresh machine.
#   make run   installs what is missing, builds, serves http://127.0.0.1:3000 (SQLite under ./data, local runtime)
#   make test  installs what is missing and runs every test (cargo tests, then Playwright in Chromium)
# Tools go to a cache outside the clone so later runs on the same machine reuse them.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

TOOLS ?= $(HOME)/.cache/kubefn-tools
CARGO_LEPTOS_VERSION := 0.3.10
WASM_BINDGEN_VERSION := 0.2.130
BINARYEN_VERSION := 132
SASS_VERSION := 1.108.2
export PATH := $(TOOLS)/bin:$(TOOLS)/node/node_modules/.bin:$(HOME)/.cargo/bin:$(PATH)

# cargo-leptos passes these to rustc; plain `cargo test` gets the same values so the two share
# one build instead of rebuilding leptos whenever they alternate.
export LEPTOS_OUTPUT_NAME := kubefn
export LEPTOS_SITE_ROOT := target/site
export LEPTOS_SITE_PKG_DIR := pkg

.PHONY: sandbox help run build build-release test bundle-budget test-unit test-runtimes test-e2e screenshots test-kubernetes testcluster lint-tools cluster cluster-stop bench bench-deps tools wasm-target chromium e2e-deps clean

# Where `make cluster` keeps the control plane it starts for a person (tests use their own).
CLUSTER_DIR ?= $(or $(TMPDIR),/tmp)/kubefn-cluster

help:
	@echo "make run    build and serve kubefn on http://127.0.0.1:3000"
	@echo "make test   run every test (unit, API, migrations, browser end-to-end)"
	@echo "make bench  measure (release build) and write bench/results/"
	@echo "make screenshots   the browser run again, saving the README's docs/screenshots/"
	@echo "make cluster / make cluster-stop   a real Kubernetes cluster on this machine (a real node, kwok nodes)"

run: tools sandbox build-release
	KUBEFN_DATA_DIR=$${KUBEFN_DATA_DIR:-data} ./target/release/kubefn

# --split: pages behind the catalog come as their own wasm chunks (app.rs, docs/BUNDLE.md).
build: tools
	cargo leptos build --split

build-release: tools
	# A quicker release profile for the server; the wasm bundle keeps its size-optimised profile.
	CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 cargo leptos build --release --split

test: test-unit test-runtimes test-e2e bundle-budget

# Every cargo test, the kubernetes runtime's included: its test binary starts the control plane
# built here (cached) and stops it when it exits. The benches are compiled too (not run), so
# `make bench` never finds them broken.
test-unit: tools lint-tools sandbox testcluster
	cargo fmt --check
	cargo clippy --features ssr --all-targets -- -D warnings
	cargo test --features ssr
	# The REST suite again, every app on a fresh database of a real PostgreSQL (tests/postgres).
	KUBEFN_TEST_DATABASE=postgres cargo test --features ssr --test rest_api
	cargo test --features ssr --benches --no-run

# The browser bundle, gzipped (-9) as it travels, against its budgets: the wasm every page loads
# before it hydrates, and the most a first visit downloads (one that starts on the heaviest page
# split into its own chunks). The goal for the first is 400 KB (#19); the budgets hold the sizes
# reached so far, so a change that grows either fails here, and they only ever come down
# (docs/BUNDLE.md).
BUNDLE_BUDGET_KB := 375
FIRST_VISIT_BUDGET_KB := 590
bundle-budget: tools
	cargo leptos build --release --split --frontend-only
	python3 bench/bundle.py $(LEPTOS_SITE_ROOT)/$(LEPTOS_SITE_PKG_DIR) \
	  --budget-kb $(BUNDLE_BUDGET_KB) --page-budget-kb $(FIRST_VISIT_BUDGET_KB)

# The kubernetes runtime's integration tests alone (they start their own control plane).
test-kubernetes: tools testcluster
	cargo test --features ssr --test kubernetes_runtime

# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok, the
# kubelet and kube-proxy from the versions pinned in k8s/testcluster/go.mod (about 7 minutes cold
# on 2 cores, then cached) and kube-router (its network policy controller; about a minute cold),
# installs what the real node runs on from Debian (containerd, runc, the CNI plugins, nftables,
# iptables, ipset, iproute2) and builds its images with mmdebstrap (about 2 minutes cold, then
# cached).
NODE_PACKAGES := containerd runc containernetworking-plugins nftables iptables ipset iproute2 mmdebstrap
testcluster:
	@command -v go >/dev/null || { echo "the Kubernetes tests need Go 1.26 (https://go.dev/dl/) to build their control plane" >&2; exit 1; }
	@missing=$$(for p in $(NODE_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [[ -n "$$missing" ]]; then \
	  echo "installing the test cluster's real node from Debian: $$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) || \
	  { echo "cannot install $$missing: the Kubernetes tests run functions on a real node and need them" >&2; exit 1; }; \
	fi
	k8s/testcluster/build.sh
	k8s/testcluster/build-kube-router.sh
	k8s/testcluster/images.sh

cluster: testcluster
	@k8s/testcluster/start.sh $(CLUSTER_DIR) >/dev/null
	@echo "cluster running (a real node, 2 kwok nodes); kubeconfig: $(CLUSTER_DIR)/kubeconfig"
	@echo "  kubectl:  $$(k8s/testcluster/build.sh)/kubectl --kubeconfig $(CLUSTER_DIR)/kubeconfig get nodes"
	@echo "  kubefn:   KUBEFN_RUNTIME=kubernetes KUBEFN_KUBECONFIG=$(CLUSTER_DIR)/kubeconfig \\"
	@echo "            KUBEFN_PYTHON_IMAGE=kubefn.test/python:3.11-bookworm KUBEFN_NODE_IMAGE=kubefn.test/node:18-bookworm make run"
	@echo "  stop:     make cluster-stop"

cluster-stop:
	k8s/testcluster/stop.sh $(CLUSTER_DIR)

# The function bootstraps, tested in their own languages with real processes and real HTTP.
test-runtimes:
	python3 -m unittest discover -s src/runtimes/python -p 'test_*.py' -v
	node --test src/runtimes/node/

test-e2e: build sandbox chromium e2e-deps
	end2end/run.sh

# The browser run again, saving its screenshots over the README's (docs/screenshots/); `make
# test` keeps them under end2end/test-results/ and leaves the tracked ones alone.
screenshots: build sandbox chromium e2e-deps
	KUBEFN_SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots end2end/run.sh

# Performance is measured here, never in timed tests: medians against a baseline of the same run.
# The Rust benches (local runtime; Kubernetes against the test control plane) leave JSON in
# target/bench-run; bench/system.py drives the release server (gateway vs nginx with wrk,
# footprint, catalog render, wasm size, both seed experiments) and writes bench/results/ and
# the README's table.
bench: build-release sandbox testcluster bench-deps
	rm -rf target/bench-run
	KUBEFN_BENCH_DIR=target/bench-run CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
	  cargo bench --features ssr --bench local_runtime --bench kubernetes_runtime
	python3 bench/system.py --run target/bench-run

bench-deps:
	@if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then \
	  echo "installing wrk and nginx from Debian for the benchmarks"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light) || \
	  { echo "cannot install wrk and nginx: make bench needs both" >&2; exit 1; }; \
	fi

tools: wasm-target $(TOOLS)/bin/cargo-leptos $(TOOLS)/bin/wasm-bindgen $(TOOLS)/node/.installed-$(BINARYEN_VERSION)-$(SASS_VERSION)

# rustfmt and clippy: `make test` checks the style and the lints before it runs a test.
lint-tools:
	@for component in rustfmt clippy; do \
	  rustup component list --installed 2>/dev/null | grep -q "^$$component" || rustup component add $$component; \
	done

wasm-target:
	@if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then \
	  echo "installing the wasm32-unknown-unknown target"; \
	  rustup target add wasm32-unknown-unknown || bash ../shared/toolchain/install-wasm32-std.sh; \
	fi

$(TOOLS)/bin/cargo-leptos:
	# cargo-leptos' own release profile takes ~40 min on 2 cores; these settings take ~11 and work the same.
	CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
	  cargo install cargo-leptos --version $(CARGO_LEPTOS_VERSION) --locked --root $(TOOLS)

$(TOOLS)/bin/wasm-bindgen:
	# Must equal the wasm-bindgen pinned in Cargo.toml; --locked fails on a yanked transitive crate.
	cargo install wasm-bindgen-cli --version =$(WASM_BINDGEN_VERSION) --root $(TOOLS)

# wasm-opt from npm's binaryen (Debian's is too old and breaks hydration) and dart-sass from npm:
# cargo-leptos would otherwise try to download them from hosts this machine cannot reach.
$(TOOLS)/node/.installed-$(BINARYEN_VERSION)-$(SASS_VERSION):
	mkdir -p $(TOOLS)/node
	npm install --prefix $(TOOLS)/node --no-audit --no-fund binaryen@$(BINARYEN_VERSION) sass@$(SASS_VERSION)
	touch $@

# The local runtime runs function code in bubblewrap (see the README's "Security model"); it
# refuses to start without it unless kubefn is started with --single-user.
sandbox:
	@if [ "$${KUBEFN_SINGLE_USER:-false}" != true ] && ! command -v bwrap >/dev/null; then \
	  echo "installing Debian's bubblewrap: the local runtime sandboxes function code with it"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap) || \
	  { echo "cannot install bubblewrap: run as root, install it yourself, or (only on a machine where you are the only user) KUBEFN_SINGLE_USER=true make run (see the README)" >&2; exit 1; }; \
	fi

chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || \
	  { echo "cannot install chromium: the browser tests need /usr/bin/chromium" >&2; exit 1; }; \
	fi

e2e-deps:
	cd end2end && if [ ! -d node_modules/@playwright/test ]; then PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund; fi

clean:
	cargo clean
	rm -rf end2end/node_modules end2end/test-results end2end/playwright-report
