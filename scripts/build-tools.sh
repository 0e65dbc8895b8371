#!/usr/bin/env bash
# Build the test clients that drive the shim the way a container runtime does, and cache
# them outside the repository, keyed by a version derived from their inputs:
#
#   ${PYROUTE2_CNI_CACHE:-/var/cache/pyroute2-cni}/tools-<version>/
#     cnitool                   libcni client (tools/cnitool/main.go, Debian's libcni)
#     cri/                      CRI v1 gRPC client for Python (api.proto from the sources of
#                               the installed containerd, compiled with grpcio-tools)
#     images/pause.tar          OCI image: static pause (tools/pause/pause.c)
#     images/busybox.tar        OCI image: busybox-static with its applet links
#     tools.json                what is where (read by tests/harness/cri.py and the tests)
#
# Usage: scripts/build-tools.sh               build what is missing, print a summary; the
#                                             last line is the tools directory
#        scripts/build-tools.sh --print-dir   print the directory; exit 1 when not built
#
# Idempotent: a complete directory for the current inputs is reused as is.  The version
# changes with tools/cnitool/main.go, tools/pause/pause.c, this script and the versions of
# the Debian packages and of grpcio-tools that go into the build.  Needs the network
# (Debian's archive) only for the containerd source package, once.
#
# Environment:
#   PYROUTE2_CNI_CACHE   cache root (default /var/cache/pyroute2-cni)
#   DEBIAN_MIRROR        source mirror (default http://deb.debian.org/debian)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
CACHE_ROOT="${PYROUTE2_CNI_CACHE:-/var/cache/pyroute2-cni}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PY="$repo/.venv/bin/python"

# Debian packages the tools are built from or run with.
PACKAGES=(golang-go golang-github-appc-cni-dev containerd runc containernetworking-plugins
          busybox-static gcc libc6-dev dpkg-dev xz-utils iptables util-linux)

log() { printf '[build-tools] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo none; }

grpc_tools_version() {
    local d
    for d in "$repo"/.venv/lib/python3*/site-packages/grpcio_tools-*.dist-info; do
        [[ -d $d ]] && { basename "$d" .dist-info; return; }
    done
    echo none
}

tools_version() {
    {
        cat "$repo/tools/cnitool/main.go" "$repo/tools/pause/pause.c" "${BASH_SOURCE[0]}"
        for p in "${PACKAGES[@]}"; do echo "$p $(pkg_version "$p")"; done
        grpc_tools_version
    } | sha256sum | cut -c1-12
}

OUT="$CACHE_ROOT/tools-$(tools_version)"

if [[ ${1:-} == --print-dir ]]; then
    echo "$OUT"
    [[ -f $OUT/tools.json ]] && exit 0
    log "not built: run scripts/build-tools.sh (make tools) on the host first"
    exit 1
fi
[[ $# -eq 0 ]] || die "usage: $0 [--print-dir]"

summary() {
    log "tools in $OUT:"
    log "  cnitool   $(du -h "$OUT/cnitool" | cut -f1)  (libcni $(pkg_version golang-github-appc-cni-dev), $(go version | cut -d' ' -f3))"
    log "  cri/      $(cd "$OUT/cri" && echo *.py)  (CRI runtime.v1 from containerd $(cat "$OUT/cri/SOURCE"))"
    log "  images/   $(cd "$OUT/images" && for f in *.tar; do printf '%s(%s) ' "$f" "$(du -h "$f" | cut -f1)"; done)"
    echo "$OUT"
}

if [[ -f $OUT/tools.json ]]; then
    summary
    exit 0
fi

mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.build-tools.lock"
flock 9
if [[ -f $OUT/tools.json ]]; then
    summary
    exit 0
fi
began=$(date +%s)

# -- dependencies ------------------------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2
    # The version covers the packages: recompute it now that they are installed.
    OUT="$CACHE_ROOT/tools-$(tools_version)"
fi
[[ -x $PY ]] || die "missing $PY: make venv first"
"$PY" -c 'import grpc_tools.protoc' 2>/dev/null || die "grpcio-tools missing in the venv: make venv"

work="$OUT.tmp.$$"
rm -rf "$work"
mkdir -p "$work/cri" "$work/images"
trap 'rm -rf "$work"' EXIT

# -- (a) cnitool: GOPATH mode against Debian's libcni ------------------------------------
log "building cnitool against libcni $(pkg_version golang-github-appc-cni-dev)"
gopath="$work/gopath"
mkdir -p "$gopath/src/pyroute2-cni/cnitool"
cp "$repo/tools/cnitool/main.go" "$gopath/src/pyroute2-cni/cnitool/"
(
    cd "$gopath/src/pyroute2-cni/cnitool"
    GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOCACHE="$CACHE_ROOT/gocache" \
        GOFLAGS=-p=2 CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$work/cnitool" .
)
rm -rf "$gopath"

# -- (b) the CRI client: api.proto from the installed containerd's source package -------
cri_version=$(dpkg-query -W -f='${source:Version}' containerd)
apt_dir="$CACHE_ROOT/apt-src-tools"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
cat >"$apt_dir/sources.list" <<EOF
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $DEBIAN_MIRROR bookworm main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $DEBIAN_MIRROR bookworm-updates main
EOF
apt_opts=(
    -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives"
    -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "APT::Sandbox::User=root"
)
src="$work/src"
mkdir -p "$src"
log "fetching the containerd $cri_version source package for the CRI api.proto"
apt-get "${apt_opts[@]}" update -qq >&2
if ! (cd "$src" && apt-get "${apt_opts[@]}" source --download-only -qq "containerd=$cri_version" >&2); then
    log "containerd=$cri_version has no source in the archive; using containerd/bookworm"
    (cd "$src" && apt-get "${apt_opts[@]}" source --download-only -qq containerd/bookworm >&2)
fi
orig=$(find "$src" -maxdepth 1 -name 'containerd_*.orig.tar.*' | head -n1)
[[ -n $orig ]] || die "no containerd orig tarball in $src"
proto_path=$(tar -tf "$orig" | grep -E '^[^/]+/vendor/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto$' | head -n1)
[[ -n $proto_path ]] || die "$orig has no vendor/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto"
tar -xf "$orig" -C "$src" "$proto_path"
basename "$orig" | sed -E 's/^containerd_(.*)\.orig\.tar\..*$/\1/' >"$work/cri/SOURCE"
cp "$src/$proto_path" "$work/cri/api.proto.orig"
# gogoproto only tunes the Go code generator; protoc for Python does not know it.
sed -e '/gogoproto\/gogo.proto/d' -e '/^option (gogoproto\./d' \
    "$src/$proto_path" >"$work/cri/cri_runtime_v1.proto"
if grep -q gogoproto "$work/cri/cri_runtime_v1.proto"; then
    die "api.proto still mentions gogoproto after stripping its options"
fi
rm -rf "$src"
log "compiling the CRI runtime.v1 stubs with grpcio-tools ($(grpc_tools_version))"
"$PY" -m grpc_tools.protoc -I "$work/cri" --python_out="$work/cri" \
    --grpc_python_out="$work/cri" --pyi_out="$work/cri" "$work/cri/cri_runtime_v1.proto"

# -- (c) OCI images: static pause, busybox-static ---------------------------------------
log "building the static pause binary"
rootfs="$work/rootfs"
mkdir -p "$rootfs/pause" "$rootfs/busybox/bin"
gcc -std=c11 -static -Os -s -Wall -Wextra -Werror -o "$rootfs/pause/pause" "$repo/tools/pause/pause.c"
"$rootfs/pause/pause" -v >&2
cp /bin/busybox "$rootfs/busybox/bin/busybox"
for applet in $(/bin/busybox --list); do
    [[ $applet == busybox ]] || ln -s busybox "$rootfs/busybox/bin/$applet"
done

log "packing OCI image archives"
python3 - "$rootfs" "$work/images" "$(dpkg --print-architecture)" <<'PYEOF'
"""Pack a directory into a one-layer OCI image archive that `ctr images import` loads."""
import hashlib
import io
import json
import os
import sys
import tarfile

rootfs, out, arch = sys.argv[1], sys.argv[2], sys.argv[3]
IMAGES = {
    # archive: (rootfs subdir, image name, entrypoint, cmd)
    "pause": ("pause", "localhost/pyroute2-cni/pause:test", ["/pause"], []),
    "busybox": ("busybox", "localhost/pyroute2-cni/busybox:test", [], ["/bin/sh"]),
}


def layer(directory: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for parent, dirs, files in os.walk(directory):
            dirs.sort()
            for name in sorted(dirs) + sorted(files):
                path = os.path.join(parent, name)
                info = tar.gettarinfo(path, arcname=os.path.relpath(path, directory))
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                if info.isreg():
                    with open(path, "rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


for archive, (subdir, name, entrypoint, cmd) in IMAGES.items():
    blobs: dict[str, bytes] = {}
    layer_tar = layer(os.path.join(rootfs, subdir))
    blobs[digest(layer_tar)] = layer_tar
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {
                "Env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"],
                "Entrypoint": entrypoint or None,
                "Cmd": cmd or None,
                "WorkingDir": "/",
            },
            "rootfs": {"type": "layers", "diff_ids": [digest(layer_tar)]},
            "history": [{"created_by": "scripts/build-tools.sh", "created": "1970-01-01T00:00:00Z"}],
            "created": "1970-01-01T00:00:00Z",
        },
        sort_keys=True,
    ).encode()
    blobs[digest(config)] = config
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest(layer_tar),
                    "size": len(layer_tar),
                }
            ],
        },
        sort_keys=True,
    ).encode()
    blobs[digest(manifest)] = manifest
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest(manifest),
                    "size": len(manifest),
                    "platform": {"architecture": arch, "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
                    },
                }
            ],
        },
        sort_keys=True,
    ).encode()
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index}
    for d, data in blobs.items():
        files["blobs/sha256/" + d.split(":", 1)[1]] = data
    path = os.path.join(out, archive + ".tar")
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for dirname in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(dirname)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for fname, data in files.items():
            info = tarfile.TarInfo(fname)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    print(f"{archive}: {name} {digest(manifest)}", file=sys.stderr)
PYEOF
rm -rf "$rootfs"

# -- manifest ---------------------------------------------------------------------------
python3 - "$work" "$OUT" <<PYEOF
import json, sys
work, out = sys.argv[1], sys.argv[2]
manifest = {
    "version": "$(basename "$OUT" | sed 's/^tools-//')",
    "dir": out,
    "cnitool": out + "/cnitool",
    "cri_dir": out + "/cri",
    "cri_module": "cri_runtime_v1",
    "cri_source": open(work + "/cri/SOURCE").read().strip(),
    "images": {
        "pause": {"archive": out + "/images/pause.tar", "name": "localhost/pyroute2-cni/pause:test"},
        "busybox": {"archive": out + "/images/busybox.tar", "name": "localhost/pyroute2-cni/busybox:test"},
    },
    "libcni": "$(pkg_version golang-github-appc-cni-dev)",
    "containerd": "$(pkg_version containerd)",
    "plugins": "$(pkg_version containernetworking-plugins)",
}
with open(work + "/tools.json", "w") as fh:
    json.dump(manifest, fh, indent=2)
    fh.write("\n")
PYEOF

rm -rf "$OUT"
mv "$work" "$OUT"
trap - EXIT
# Builds for older inputs (not touched for an hour: no run is using them any more).
find "$CACHE_ROOT" -maxdepth 1 -name 'tools-*' -type d ! -name "$(basename "$OUT")" \
    ! -name '*.tmp.*' -mmin +60 -exec rm -rf {} + 2>/dev/null || true
log "built in $(( $(date +%s) - began )) s"
summary
