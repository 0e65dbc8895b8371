# Developer entry points.  `make test` works on a fresh Debian 12 machine:
# it installs apt packages, a venv and the source builds it needs, then runs
# every tier.  Build caches live outside the repo (/var/cache/pyroute2-cni).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CACHE  ?= /var/cache/pyroute2-cni
export PYROUTE2_CNI_CACHE := $(CACHE)

.PHONY: all deps venv shim kube-apiserver tools test test-unit test-api test-kernel test-e2e \
        lint bench lab lab-down clean

all: venv shim

deps:
	scripts/install-deps.sh

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 'setuptools>=77' wheel
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.stamp

build/pyroute2-cni: $(wildcard shim/*.c shim/*.h) shim/build.sh
	mkdir -p build
	shim/build.sh $@

shim: build/pyroute2-cni

kube-apiserver:
	scripts/build-kube-apiserver.sh

tools: deps venv shim
	scripts/build-tools.sh

test-unit: venv
	scripts/pytest-tier unit

test-api: venv kube-apiserver
	scripts/pytest-tier api

test-kernel: venv shim kube-apiserver
	scripts/run-in-vrf-kernel -- scripts/pytest-tier kernel

test-e2e: venv shim kube-apiserver tools
	scripts/run-in-vrf-kernel -- scripts/pytest-tier e2e

# Every tier, even when an earlier one fails; the exit status is the worst.
test: deps venv shim kube-apiserver tools
	scripts/test-all

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy -p pyroute2_cni -p tests

bench: deps venv shim kube-apiserver tools
	scripts/bench

lab: tools
	scripts/lab up

lab-down:
	scripts/lab down

clean:
	rm -rf build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
