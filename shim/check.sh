#!/bin/sh
# The shim's parser and ZMTP code under AddressSanitizer and UBSan.
#   shim/check.sh            (PYTHON=... to pick the interpreter; default .venv/bin/python)
# Builds the shim (both C files, unchanged) with gcc -fsanitize=address,undefined
# -fno-sanitize-recover=all (dynamic: the sanitizers do not link statically, so not
# musl) and runs tests/unit/test_shim.py against that binary: the hypothesis-made
# network configs, the hand-written ZMTP peers, and the malformed greetings, frames,
# stdin and environments.  Any sanitizer report is written to a log directory; the
# check fails if a test fails or if that directory holds a report.
set -eu

src=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$src")
python=${PYTHON:-$repo/.venv/bin/python}
work=$(mktemp -d /tmp/shim-check.XXXXXX)
trap 'rm -rf "$work"' EXIT

gcc -std=c11 -O1 -g -Wall -Wextra -Werror -fno-omit-frame-pointer \
    -fsanitize=address,undefined -fno-sanitize-recover=all \
    -o "$work/pyroute2-cni" "$src/pyroute2-cni.c" "$src/zmtp.c"

mkdir "$work/reports"
# The tests run the shim with exactly the env they give it; they add the lines of
# PYROUTE2_CNI_SANITIZER_ENV to every run (tests/unit/test_shim.py, run_shim).
# No leak check: a one-shot process that exits (often through cni_error) leaves
# its buffers to the kernel by design.
opts="log_path=$work/reports/report:exitcode=86"
export PYROUTE2_CNI_SHIM="$work/pyroute2-cni"
export PYROUTE2_CNI_SANITIZER_ENV="ASAN_OPTIONS=$opts:detect_leaks=0:abort_on_error=0
UBSAN_OPTIONS=$opts:halt_on_error=1:print_stacktrace=1"

status=0
(cd "$repo" && "$python" -m pytest -q -p no:cacheprovider -m unit \
    tests/unit/test_shim.py -k "not static_and_small") || status=$?

if [ -n "$(ls -A "$work/reports")" ]; then
    echo "shim/check.sh: sanitizer reports:" >&2
    cat "$work/reports"/* >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "shim/check.sh: tests failed under the sanitizers (exit $status)" >&2
    exit "$status"
fi
echo "shim/check.sh: no sanitizer report"
