#!/usr/bin/env bash
# scripts/build-kube.sh COMMAND...: build Kubernetes 1.20.2 commands (kube-apiserver,
# kubelet, kube-scheduler, kube-controller-manager, ...) from Debian bookworm's `kubernetes`
# source package (1.20.5+really1.20.2) and cache each binary outside the repository:
#
#   ${PYROUTE2_CNI_CACHE:-/var/cache/pyroute2-cni}/COMMAND-1.20.2/COMMAND
#
# Idempotent: a command whose cached binary exists is not built again.  Prints each
# binary's path, in the order asked; the last line is the last command's.
#
# Steps (see /work/shared/notes/test-infra.md):
#   1. install the build dependencies (apt-get update first);
#   2. fetch the source with a private deb-src list (the system's lists are untouched);
#   3. replace vendor/github.com/modern-go/reflect2 (1.0.1, segfaults with Go 1.19)
#      with Debian's 1.0.2 from /usr/share/gocode;
#   4. generate zz_generated.openapi.go (make gen_openapi) when kube-apiserver is asked;
#   5. build each cmd/COMMAND in GOPATH mode with the version strings set to v1.20.2.
# Measured cold on 2 cores: kube-apiserver ~5.5 min; kubelet ~5 min, kube-scheduler and
# kube-controller-manager ~2 min more on the shared Go build cache.
#
# Environment:
#   PYROUTE2_CNI_CACHE   cache root (default /var/cache/pyroute2-cni)
#   BUILD_JOBS           parallel Go compile jobs (default 2)
#   KEEP_BUILD_TREE=1    keep the unpacked source tree after a successful build
set -euo pipefail

K8S_VERSION="1.20.2"
SRC_PACKAGE="kubernetes"
SRC_SUITE="bookworm"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE_ROOT="${PYROUTE2_CNI_CACHE:-/var/cache/pyroute2-cni}"
BUILD_JOBS="${BUILD_JOBS:-2}"

log() { printf '[build-kube] %s\n' "$*" >&2; }

if (($# == 0)); then
    log "usage: $0 COMMAND... (e.g. kube-apiserver kubelet kube-scheduler kube-controller-manager)"
    exit 2
fi
bin_of() { echo "${CACHE_ROOT}/$1-${K8S_VERSION}/$1"; }
missing_cmds() {
    local cmd
    for cmd in "$@"; do [[ -x "$(bin_of "${cmd}")" ]] || echo "${cmd}"; done
}
print_paths() {
    local cmd
    for cmd in "$@"; do bin_of "${cmd}"; done
}

if [[ -z "$(missing_cmds "$@")" ]]; then
    print_paths "$@"
    exit 0
fi

# One build at a time (tests may call this script while a build is running).
mkdir -p "${CACHE_ROOT}"
exec 9>"${CACHE_ROOT}/.build-kube.lock"
flock 9
mapfile -t TO_BUILD < <(missing_cmds "$@")
if ((${#TO_BUILD[@]} == 0)); then
    print_paths "$@"
    exit 0
fi

start_ts=$(date +%s)

# --- 1. build dependencies ---------------------------------------------------------
BUILD_DEPS=(golang-go rsync golang-github-modern-go-reflect2-dev dpkg-dev make
            etcd-server openssl ca-certificates util-linux)
missing=()
for pkg in "${BUILD_DEPS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("${pkg}")
    fi
done
if ((${#missing[@]})); then
    log "installing build dependencies: ${missing[*]}"
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        "${missing[@]}" >&2
fi

REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2
if [[ ! -f "${REFLECT2_SRC}/reflect2.go" ]]; then
    log "missing ${REFLECT2_SRC} (golang-github-modern-go-reflect2-dev)"
    exit 1
fi

# --- 2. source package through a private deb-src list ------------------------------
APT_DIR="${CACHE_ROOT}/apt-src"
mkdir -p "${APT_DIR}/lists/partial" "${APT_DIR}/archives/partial"
cat >"${APT_DIR}/sources.list" <<EOF
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${DEBIAN_MIRROR} ${SRC_SUITE} main
EOF
APT_OPTS=(
    -o "Dir::Etc::SourceList=${APT_DIR}/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=${APT_DIR}/lists"
    -o "Dir::Cache::Archives=${APT_DIR}/archives"
    -o "Dir::Cache::pkgcache="
    -o "Dir::Cache::srcpkgcache="
    -o "APT::Sandbox::User=root"
)

WORK="${CACHE_ROOT}/build-kube-${K8S_VERSION}"
mkdir -p "${WORK}"
SRC_DIR=$(find "${WORK}" -maxdepth 1 -mindepth 1 -type d -name "${SRC_PACKAGE}-*" | head -n1 || true)
if [[ -z "${SRC_DIR}" || ! -f "${SRC_DIR}/.unpacked" ]]; then
    [[ -n "${SRC_DIR}" ]] && rm -rf "${SRC_DIR}"
    log "fetching ${SRC_PACKAGE}/${SRC_SUITE} source"
    apt-get "${APT_OPTS[@]}" update >&2
    (cd "${WORK}" && apt-get "${APT_OPTS[@]}" source "${SRC_PACKAGE}/${SRC_SUITE}" >&2)
    SRC_DIR=$(find "${WORK}" -maxdepth 1 -mindepth 1 -type d -name "${SRC_PACKAGE}-*" | head -n1)
    if [[ -z "${SRC_DIR}" ]]; then
        log "apt-get source did not unpack a ${SRC_PACKAGE}-* directory in ${WORK}"
        exit 1
    fi
    touch "${SRC_DIR}/.unpacked"
    # The downloaded .orig/.debian tarballs are no longer needed.
    find "${WORK}" -maxdepth 1 -type f -delete
fi
log "source tree: ${SRC_DIR}"
cd "${SRC_DIR}"
if [[ ! -d vendor/k8s.io || ! -d cmd ]]; then
    log "unexpected source layout in ${SRC_DIR} (no vendor/ or cmd/)"
    exit 1
fi

# --- 3. reflect2 1.0.1 -> Debian's 1.0.2 ------------------------------------------
if [[ ! -f vendor/github.com/modern-go/reflect2/.from-debian ]]; then
    log "replacing vendor/github.com/modern-go/reflect2 with ${REFLECT2_SRC}"
    rm -rf vendor/github.com/modern-go/reflect2
    mkdir -p vendor/github.com/modern-go/reflect2
    rsync -a --exclude='*_test.go' "${REFLECT2_SRC}/" vendor/github.com/modern-go/reflect2/
    touch vendor/github.com/modern-go/reflect2/.from-debian
fi

# --- 5a. version strings -----------------------------------------------------------
patch_version() {
    local f="$1" ty='([[:space:]]+string)?[[:space:]]*'
    [[ -f "${f}" ]] || { log "missing ${f}"; exit 1; }
    sed -i -E \
        -e "s/^([[:space:]]*gitMajor)[[:space:]]+string[[:space:]]*(\/\/.*)?$/\1 string = \"1\" \2/" \
        -e "s/^([[:space:]]*gitMinor)[[:space:]]+string[[:space:]]*(\/\/.*)?$/\1 string = \"20\" \2/" \
        -e "s/^([[:space:]]*gitMajor${ty}=[[:space:]]*)\"[^\"]*\"/\1\"1\"/" \
        -e "s/^([[:space:]]*gitMinor${ty}=[[:space:]]*)\"[^\"]*\"/\1\"20\"/" \
        -e "s/^([[:space:]]*gitVersion${ty}=[[:space:]]*)\"[^\"]*\"/\1\"v${K8S_VERSION}\"/" \
        -e "s/^([[:space:]]*gitTreeState${ty}=[[:space:]]*)\"[^\"]*\"/\1\"clean\"/" \
        "${f}"
    grep -Eq "gitVersion${ty}= \"v${K8S_VERSION}\"" "${f}" || { log "could not patch ${f}"; exit 1; }
    grep -Eq "gitMajor${ty}= \"1\"" "${f}" || { log "could not patch gitMajor in ${f}"; exit 1; }
}
patch_version staging/src/k8s.io/component-base/version/base.go
patch_version staging/src/k8s.io/client-go/pkg/version/base.go

# --- GOPATH layout -----------------------------------------------------------------
GOPATH_DIR="${WORK}/gopath"
mkdir -p "${GOPATH_DIR}/src/k8s.io"
ln -sfn "${SRC_DIR}" "${GOPATH_DIR}/src/k8s.io/kubernetes"
export GOPATH="${GOPATH_DIR}"
export GO111MODULE=off
export GOFLAGS="-p=${BUILD_JOBS}"
export GOCACHE="${WORK}/gocache"
export CGO_ENABLED=0
export KUBE_BUILD_PLATFORMS=linux/amd64
unset GOROOT GOBIN

# --- 4. OpenAPI definitions (the API server only) ----------------------------------
OPENAPI_FILE=pkg/generated/openapi/zz_generated.openapi.go
if [[ " ${TO_BUILD[*]} " == *" kube-apiserver "* && ! -s "${OPENAPI_FILE}" ]]; then
    log "generating ${OPENAPI_FILE} (make gen_openapi)"
    (cd "${GOPATH_DIR}/src/k8s.io/kubernetes" && make gen_openapi >&2)
    [[ -s "${OPENAPI_FILE}" ]] || { log "make gen_openapi did not produce ${OPENAPI_FILE}"; exit 1; }
fi

# --- 5b. build -----------------------------------------------------------------------
for cmd in "${TO_BUILD[@]}"; do
    if [[ ! -d "cmd/${cmd}" ]]; then
        log "no cmd/${cmd} in ${SRC_DIR}"
        exit 1
    fi
    out_bin=$(bin_of "${cmd}")
    mkdir -p "$(dirname "${out_bin}")"
    log "building cmd/${cmd} (GOPATH mode, -p=${BUILD_JOBS})"
    began=$(date +%s)
    tmp_bin="${out_bin}.tmp.$$"
    (cd "${GOPATH_DIR}/src/k8s.io/kubernetes" &&
        go build -trimpath -ldflags='-s -w' -o "${tmp_bin}" "./cmd/${cmd}" >&2)
    "${tmp_bin}" --version >&2
    mv -f "${tmp_bin}" "${out_bin}"
    log "cmd/${cmd} built in $(( $(date +%s) - began )) s"
done

if [[ "${KEEP_BUILD_TREE:-0}" != 1 ]]; then
    rm -rf "${WORK}"
fi
log "built ${TO_BUILD[*]} in $(( $(date +%s) - start_ts )) s"
print_paths "$@"
