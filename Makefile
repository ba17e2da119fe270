# MetaStore: build, run and test. `make run` and `make test` work on a fresh machine:
# both install what they need first (scripts/install-deps.sh, idempotent).

CARGO ?= cargo
RUN_FLAGS ?=

.PHONY: all deps build release run test soak sim sim-replay faults fuzz unit lint fmt fmt-check clippy bench clean crds images images-check kubelet-smoke e2e k8s-binaries manifests chart-check

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace --all-targets

release: deps
	$(CARGO) build --release -p metastore-node

## A single-node MetaStore on 127.0.0.1:2379 (data in ./default.metastore); etcdctl works at once.
run: release
	./target/release/metastore-node $(RUN_FLAGS)

## End to end on a real Kubernetes control plane (built once from source, cached by version).
e2e: deps
	CARGO=$(CARGO) bash scripts/e2e.sh

## Builds (or finds in the cache) kube-apiserver, kube-controller-manager and etcd.
k8s-binaries:
	bash scripts/k8s-binaries.sh

## deploy/operator.yaml: the chart rendered with its defaults (CRD included) for kubectl apply.
manifests:
	@T=$$(bash scripts/k8s-tools.sh | tail -1); \
	$$T/helm template metastore-operator charts/metastore-operator --namespace metastore-system --include-crds > deploy/operator.yaml

## Offline chart checks: helm lint, strict schema validation, promtool, rendered manifests current.
chart-check:
	bash scripts/chart-check.sh

## Regenerates the MetaStore CRD from the operator's types (a test fails when it is stale).
crds: deps
	$(CARGO) run -q -p metastore-operator --bin crdgen > crds/metastore.io_metastores.yaml
	cp crds/metastore.io_metastores.yaml charts/metastore-operator/crds/

## Container images of the node and the operator: docker build of deploy/docker/*.Dockerfile with a
## Docker daemon, else buildah from the built binaries on a base made locally (scripts/images.sh).
IMAGE_TAG ?= 0.2.0
images: deps
	CARGO=$(CARGO) IMAGE_TAG=$(IMAGE_TAG) bash scripts/images.sh

## The images built without a daemon, checked: config as the Dockerfiles say, a member run from
## the node image's own files as uid 65532 on a read-only root serves etcdctl.
images-check: deps
	CARGO=$(CARGO) IMAGE_TAG=$(IMAGE_TAG) bash scripts/images-check.sh

## The node image in a real pod: the real kubelet (built from the pinned Kubernetes module) with
## containerd and runc runs it with the operator's securityContext; a killed container and a
## restarted kubelet leave it serving its data.
kubelet-smoke: deps
	CARGO=$(CARGO) IMAGE_TAG=$(IMAGE_TAG) bash scripts/kubelet-smoke.sh

## Everything CI checks: formatting, clippy, unit and process-level tests.
test: deps fmt-check clippy
	METASTORE_ETCD=$$(bash scripts/etcd-server.sh | tail -1) \
	METASTORE_PY=$$(bash scripts/python-etcd3.sh | tail -1) \
	METASTORE_WEED=$$(bash scripts/seaweedfs.sh | tail -1) \
	METASTORE_NODE_PREVIOUS=$$(bash scripts/node-previous.sh | tail -1) \
	METASTORE_ETCD_LATEST=$$(bash scripts/etcd-latest.sh | tail -1) \
	  $(CARGO) test --workspace --all-targets --exclude metastore-e2e

## The fault-injection suite's short profile alone (also part of `make test`), with its table.
faults: deps
	$(CARGO) test -p metastore-node --test faults -- short_profile known_bad_lease_is_caught --nocapture

## The deterministic simulation of the Raft loop (node/tests/simulation.rs), long: SEEDS seeds
## of DURATION simulated seconds each, within MINUTES of wall time (its CI profile is in `make test`).
SEEDS ?= 1000
MINUTES ?= 10
DURATION ?= 120
FIRST_SEED ?= 1000
sim: deps
	SIM_SEEDS=$(SEEDS) SIM_MINUTES=$(MINUTES) SIM_SECONDS=$(DURATION) SIM_FIRST_SEED=$(FIRST_SEED) \
	  $(CARGO) test --release -p metastore-node --test simulation long_run -- --ignored --nocapture

## One simulation seed again, with its trace (the line a failing seed prints): SEED, DURATION,
## HOLE (a re-opened lease hole), LINES (trace lines shown).
HOLE ?=
LINES ?= 400
sim-replay: deps
	SIM_SEED=$(SEED) SIM_SECONDS=$(DURATION) SIM_HOLE=$(HOLE) SIM_TRACE_LINES=$(LINES) \
	  $(CARGO) test -p metastore-node --test simulation replay -- --ignored --nocapture

## The long fault-injection profile: random seeded schedules for SOAK_MINUTES (default 15),
## bounded; not run by CI. SEED picks the schedules (same seed, same schedules).
SOAK_MINUTES ?= 15
SEED ?= 1
soak: deps
	METASTORE_SOAK_MINUTES=$(SOAK_MINUTES) METASTORE_FAULTS_SEED=$(SEED) \
	METASTORE_NS_TEST_LIMIT_SECS=$$(( $(SOAK_MINUTES) * 60 + 600 )) \
	  $(CARGO) test --release -p metastore-node --test faults -- soak --ignored --nocapture

## The network-facing decoders and apply under longer random runs than `make test` gives them
## (node/src/replicated/fuzz_tests.rs and the message guard's): CASES property cases, GUARD
## seeds of 20 000 peer messages each, release build.
CASES ?= 50000
GUARD ?= 300
fuzz: deps
	PROPTEST_CASES=$(CASES) GUARD_FUZZ_SEEDS=$(GUARD) \
	  $(CARGO) test --release -p metastore-node --lib -- fuzz_tests message_guard

## Unit tests only (fast, no processes).
unit: deps
	$(CARGO) test --workspace --lib

lint: fmt-check clippy

clippy: deps
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

## MetaStore and etcd 3.5.1 side by side (1/3/5 members x 1..256 clients, every workload), both
## scaled 1->3->1 under load, KV throughput of a 3-member cluster, then lease vs ReadIndex vs
## serializable reads at 1, 3 and 5 members (see docs/benchmarks.md for results and how to read
## them; scripts/bench-profile.sh profiles one workload and is not part of it).
bench: deps
	bash scripts/bench-vs-etcd.sh "1 3 5" "1 16 64 256" 3
	bash scripts/bench-scale.sh 16 2
	bash scripts/bench-kv.sh 3 5 "1 16 64"
	bash scripts/bench-reads.sh 5 "1 3 5" "1 64"
	bash scripts/bench-data.sh
	bash scripts/bench-auth.sh 3 "1 64" 3

## Data scale alone: 3 members of MetaStore, etcd 3.5.1 and etcd 3.7.3 each loaded with KEYS keys
## of VALUE bytes (default 1 GiB), side by side.
KEYS ?= 1048576
VALUE ?= 1024
bench-data: deps
	bash scripts/bench-data.sh $(KEYS) $(VALUE)

clean:
	$(CARGO) clean
