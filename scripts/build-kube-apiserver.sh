#!/usr/bin/env bash
# The API server the api tier, the lab and the benchmarks run; see scripts/build-kube.sh.
# The last line of output is the binary's path.
exec "$(dirname "$0")/build-kube.sh" kube-apiserver
