# Developer entry points.  `make test` works on a fresh Debian 12 machine:
# it installs apt packages, a venv and the source builds it needs, then runs
# every tier.  Build caches live outside the repo (/var/cache/pyroute2-cni).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The cache root: CACHE=... or PYROUTE2_CNI_CACHE=... (CI points it at an empty directory).
CACHE  ?= $(or $(PYROUTE2_CNI_CACHE),/var/cache/pyroute2-cni)
export PYROUTE2_CNI_CACHE := $(CACHE)

.PHONY: all deps venv shim kube-apiserver tools uml test test-unit test-api test-kernel \
        test-e2e shim-check lint bench bench-scale lab lab-down clean
.PHONY: images test-images kube-node lab-kubelets

all: venv shim

deps:
	scripts/install-deps.sh

$(VENV)/.stamp: pyproject.toml | deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 'setuptools>=77' wheel
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.stamp

# deps first (musl-gcc); order-only, so a present binary is not rebuilt for it.
build/pyroute2-cni: $(wildcard shim/*.c shim/*.h) shim/build.sh | deps
	mkdir -p build
	shim/build.sh $@

shim: build/pyroute2-cni

kube-apiserver:
	scripts/build-kube-apiserver.sh

# What a real node runs beside containerd (issue 16): built from the same source tree.
kube-node: deps
	scripts/build-kube.sh kubelet kube-scheduler kube-controller-manager

tools: deps venv shim
	scripts/build-tools.sh

# A User-Mode Linux kernel that boots on this CPU (Debian's, or one built from Debian's
# kernel source where Debian 12's cannot run guests): the kernel tiers, the lab, bench.
uml: deps
	scripts/install-uml.sh

# Each entry point names everything it needs, so any one of them works first on a fresh
# machine; a guest (User-Mode Linux) never installs or builds: the host does it here.
test-unit: venv
	scripts/pytest-tier unit

test-api: deps venv kube-apiserver
	scripts/pytest-tier api

test-kernel: deps venv shim kube-apiserver uml
	scripts/run-in-vrf-kernel -- scripts/pytest-tier kernel

# Real nodes (test_kubelet.py) need the memory for two nodes' unpacked images and ~22 min.
test-e2e: venv shim kube-apiserver kube-node tools uml images
	PYROUTE2_CNI_UML_MEM=$${PYROUTE2_CNI_UML_MEM:-6000M} \
	PYROUTE2_CNI_UML_TIMEOUT=$${PYROUTE2_CNI_UML_TIMEOUT:-4200} \
		scripts/run-in-vrf-kernel -- scripts/pytest-tier e2e

# The daemon and FRR images (oci-archives under $(CACHE)/images), with Debian's buildah
# from a local Debian base: no container registry needed.
images: deps shim
	scripts/build-images

# The images hold what the DaemonSet runs (buildah run; no kubelet).
test-images: venv images
	scripts/pytest-tier images

# The shim's C under AddressSanitizer/UBSan, against the shim tests (gcc, not musl).
shim-check: venv
	shim/check.sh

# Every tier, even when an earlier one fails; the exit status is the worst.
test: deps venv shim kube-apiserver kube-node tools uml images
	scripts/test-all

# Ruff, mypy and the import contracts (.importlinter: layers, and which modules own
# pyroute2, kubernetes and zmq).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy -p pyroute2_cni -p tests
	$(VENV)/bin/lint-imports --no-cache --no-logo .importlinter

bench: deps venv shim kube-apiserver tools uml
	scripts/bench

# Issue 20: hollow nodes (real actors, fake kernel and FRR) against a real API server,
# then pod churn on 100 nodes' IPAMActors, then one real daemon at 10 and 250 pods (in
# User-Mode Linux when the host has no VRF); ~30 min at the default sizes.
# BENCH_SCALE_ARGS="--sizes 10,50 --minutes 3" for less.
bench-scale: deps venv shim kube-apiserver uml
	$(PY) -m tests.harness.scale_bench $(BENCH_SCALE_ARGS)
	$(PY) -m tests.harness.churn_bench
	scripts/run-in-vrf-kernel -- $(PY) -m tests.harness.dense_bench

lab: deps venv shim kube-apiserver tools uml
	scripts/lab up

# The lab on real nodes: kubelets run the DaemonSet installed as the README says.
lab-kubelets: deps venv shim kube-apiserver kube-node tools uml images
	scripts/lab up --kubelets

lab-down:
	scripts/lab down

clean:
	rm -rf build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
