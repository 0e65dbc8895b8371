#!/usr/bin/env bash
# Make sure a User-Mode Linux kernel that boots on THIS machine is there, and record which
# one scripts/uml-run must use in ${PYROUTE2_CNI_CACHE:-/var/cache/pyroute2-cni}/uml-root
# (one line: "/" for Debian 12's user-mode-linux, or the directory scripts/build-uml.sh
# built one into).
#
# Why: Debian 12's UML (6.1) cannot start any guest process on CPUs whose FPU state is
# larger than it expects (e.g. Intel AMX: "ptrace set fp regs failed, errno = 14", then a
# kernel panic).  So: probe it with a one-line guest (1-2 s); when it panics, build a newer
# UML from Debian's kernel source (scripts/build-uml.sh, ~10 min once, cached) and probe
# that.
#
# Idempotent and quick once done.  Usage: scripts/install-uml.sh   (make uml)
set -euo pipefail

CACHE_ROOT="${PYROUTE2_CNI_CACHE:-/var/cache/pyroute2-cni}"
log() { printf '[install-uml] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

for pkg in user-mode-linux busybox-static; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || die "$pkg is not installed: run scripts/install-deps.sh (make deps) first"
done
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.install-uml.lock"
flock 9

# probe ROOT: boot ROOT/usr/bin/linux.uml with a guest that prints a token and powers off.
probe() {
    local root=$1 dir token out
    dir=$(mktemp -d "$CACHE_ROOT/.uml-probe.XXXXXX")
    token=probe-$$-$RANDOM
    printf '#!/bin/busybox sh\n/bin/busybox echo %s-$(/bin/busybox uname -r)\n/bin/busybox poweroff -f\n' \
        "$token" >"$dir/init"
    chmod +x "$dir/init"
    out=$(TMPDIR="$dir" timeout 60 "$root/usr/bin/linux.uml" mem=128M rootfstype=hostfs \
        rootflags=/ rw init="$dir/init" con0=fd:0,fd:1 con=null ssl=null uml_dir="$dir" \
        umid=probe-$$ quiet </dev/null 2>&1 | tr -d '\r' || true)
    rm -rf "$dir"
    if grep -q "^$token-" <<<"$out"; then
        grep "^$token-" <<<"$out" | head -n1 | sed "s/^$token-//"
        return 0
    fi
    grep -m1 -E "ptrace set fp regs|Kernel panic" <<<"$out" >&2 || true
    return 1
}

record() {  # record ROOT VERSION
    printf '%s\n' "$1" >"$CACHE_ROOT/uml-root.tmp" && mv -f "$CACHE_ROOT/uml-root.tmp" "$CACHE_ROOT/uml-root"
    log "using UML $2 from $1 (recorded in $CACHE_ROOT/uml-root)"
}

# A recorded choice that still boots is kept.
if [[ -f $CACHE_ROOT/uml-root ]]; then
    root=$(cat "$CACHE_ROOT/uml-root")
    if [[ -x $root/usr/bin/linux.uml ]] && version=$(probe "$root"); then
        record "$root" "$version"
        exit 0
    fi
fi
if version=$(probe /); then
    record / "$version"
    exit 0
fi
log "Debian 12's UML cannot run guests on this CPU; building one (scripts/build-uml.sh)"
out=$("$(dirname "${BASH_SOURCE[0]}")/build-uml.sh" | tail -n1)
[[ -x $out/usr/bin/linux.uml ]] || die "scripts/build-uml.sh did not produce a kernel"
version=$(probe "$out") || die "the UML kernel built in $out does not boot here either"
record "$out" "$version"
