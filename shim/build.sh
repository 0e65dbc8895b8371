#!/bin/sh
# Build the pyroute2-cni CNI shim as one static binary.
#   shim/build.sh OUTPUT        (CC=... to force a compiler)
# Uses musl-gcc when available (small static binary), else gcc -static.
set -eu

out=${1:?usage: shim/build.sh OUTPUT}
src=$(cd "$(dirname "$0")" && pwd)

if [ -z "${CC:-}" ]; then
    if command -v musl-gcc >/dev/null 2>&1; then
        CC=musl-gcc
    else
        CC=gcc
    fi
fi

mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT

# shellcheck disable=SC2086  # EXTRA_CFLAGS is a word list on purpose
"$CC" -std=c11 -static -Os -s -Wall -Wextra -Werror \
    -ffunction-sections -fdata-sections -fno-asynchronous-unwind-tables \
    -Wl,--gc-sections ${EXTRA_CFLAGS:-} \
    -o "$tmp" "$src/pyroute2-cni.c" "$src/zmtp.c"
# Atomic replace: the old binary may be running right now.
mv -f "$tmp" "$out"
trap - EXIT
