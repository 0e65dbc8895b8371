#!/usr/bin/env bash
# Build a User-Mode Linux kernel with everything the project needs compiled in, from
# Debian's own kernel source package, and cache it outside the repository:
#
#   ${PYROUTE2_CNI_CACHE:-/var/cache/pyroute2-cni}/uml-build-<version>/
#     usr/bin/linux.uml                    the kernel (scripts/uml-run runs it)
#     usr/lib/uml/modules/<release>/       modules.builtin & co. (all features are built in)
#
# Why: Debian 12's UML (6.1) cannot start any guest process on CPUs whose FPU state is
# larger than it expects (Intel AMX: "ptrace set fp regs failed, errno = 14", then a panic);
# newer UML kernels can, but Debian's newer UML builds lack IPv4/IPv6 NAT (no nf_tables ip
# family, no iptables), which the kube-proxy tests need.  scripts/install-uml.sh calls this
# only when Debian 12's UML does not boot here.
#
# Source: the newest linux-source-X.Y in Debian unstable, fetched through a private sources
# list (the system's lists are untouched).  Config: `make ARCH=um defconfig` plus the list
# below, all built in.  About 10 minutes on 2 cores, once per version.
#
# Prints the output directory as its last line.  Environment: PYROUTE2_CNI_CACHE,
# DEBIAN_MIRROR, BUILD_JOBS (default: nproc), PYROUTE2_CNI_UML_SUITE (default sid).
set -euo pipefail

CACHE_ROOT="${PYROUTE2_CNI_CACHE:-/var/cache/pyroute2-cni}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE="${PYROUTE2_CNI_UML_SUITE:-sid}"
JOBS="${BUILD_JOBS:-$(nproc)}"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf '[build-uml] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# Built in (=y): namespaces and cgroups for containerd/runc and the kubelet; VRF, VXLAN,
# veth, bridge; netfilter with nf_tables (ip, ip6, inet) and iptables-legacy NAT; hostfs,
# tmpfs, overlayfs; seccomp for runc.
OPTIONS=(
    NET INET IPV6 UNIX PACKET NETLINK_DIAG INET_DIAG UNIX_DIAG PACKET_DIAG
    NAMESPACES NET_NS UTS_NS IPC_NS PID_NS USER_NS
    CGROUPS MEMCG CGROUP_PIDS CGROUP_CPUACCT CGROUP_FREEZER CGROUP_DEVICE CGROUP_BPF
    CGROUP_SCHED FAIR_GROUP_SCHED CPUSETS BPF_SYSCALL SECCOMP SECCOMP_FILTER POSIX_MQUEUE
    IP_ADVANCED_ROUTER IP_MULTIPLE_TABLES IP_ROUTE_MULTIPATH IPV6_MULTIPLE_TABLES
    IPV6_ROUTE_INFO NET_L3_MASTER_DEV NET_VRF VXLAN VETH BRIDGE DUMMY TUN MACVLAN
    NETFILTER NETFILTER_ADVANCED NETFILTER_NETLINK NF_CONNTRACK NF_NAT NF_TABLES
    NF_TABLES_INET NF_TABLES_IPV4 NF_TABLES_IPV6 NFT_NAT NFT_MASQ NFT_CT NFT_COMPAT
    NFT_REJECT NFT_FIB_IPV4 NFT_FIB_IPV6 NF_NAT_MASQUERADE
    NETFILTER_XTABLES NETFILTER_XTABLES_LEGACY NETFILTER_XT_NAT NETFILTER_XT_TARGET_MASQUERADE
    NETFILTER_XT_MARK NETFILTER_XT_MATCH_COMMENT NETFILTER_XT_MATCH_CONNTRACK
    NETFILTER_XT_MATCH_MULTIPORT NETFILTER_XT_MATCH_ADDRTYPE NETFILTER_XT_MATCH_STATISTIC
    NETFILTER_XT_MATCH_MARK NETFILTER_XT_TARGET_REDIRECT
    IP_NF_IPTABLES IP_NF_IPTABLES_LEGACY IP_NF_FILTER IP_NF_NAT IP_NF_TARGET_MASQUERADE
    IP_NF_TARGET_REJECT IP_NF_MANGLE IP6_NF_IPTABLES IP6_NF_IPTABLES_LEGACY IP6_NF_FILTER
    IP6_NF_NAT IP6_NF_TARGET_MASQUERADE IP6_NF_MANGLE BRIDGE_NETFILTER
    HOSTFS TMPFS TMPFS_POSIX_ACL OVERLAY_FS PROC_FS SYSFS FHANDLE EPOLL SIGNALFD TIMERFD
    EVENTFD INOTIFY_USER FANOTIFY KEYS MODULES
)
# Switched off: debugging that only costs build time.
OFF=(DEBUG_INFO DEBUG_INFO_DWARF5 DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT GDB_SCRIPTS)

for tool in gcc make flex bison bc xz; do
    command -v "$tool" >/dev/null || die "$tool is missing: run scripts/install-deps.sh (make deps)"
done
mkdir -p "$CACHE_ROOT"

apt_dir="$CACHE_ROOT/apt-uml"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
cat >"$apt_dir/sources.list" <<LIST
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $DEBIAN_MIRROR $SUITE main
LIST
apt_opts=(
    -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives"
    -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "APT::Sandbox::User=root"
)
apt-get "${apt_opts[@]}" update -qq >&2
pkg=$(apt-cache "${apt_opts[@]}" pkgnames linux-source- | grep -E '^linux-source-[0-9]+\.[0-9]+$' \
    | sort -V | tail -n1)
[[ -n $pkg ]] || die "Debian $SUITE has no linux-source-X.Y package"
version=$(apt-cache "${apt_opts[@]}" show "$pkg" | awk '/^Version:/ {print $2; exit}')
key=$( { echo "$pkg $version"; printf '%s\n' "${OPTIONS[@]}" "${OFF[@]}"; gcc --version | head -n1; } \
    | sha256sum | cut -c1-10)
out="$CACHE_ROOT/uml-build-$version-$key"
if [[ -x $out/usr/bin/linux.uml ]]; then
    echo "$out"
    exit 0
fi

exec 9>"$CACHE_ROOT/.build-uml.lock"
flock 9
if [[ -x $out/usr/bin/linux.uml ]]; then
    echo "$out"
    exit 0
fi
began=$(date +%s)
work="$out.tmp.$$"
rm -rf "$work"
mkdir -p "$work/debs"
trap 'rm -rf "$work"' EXIT
log "fetching $pkg $version from Debian $SUITE"
(cd "$work/debs" && apt-get "${apt_opts[@]}" download -qq "$pkg=$version" >&2)
dpkg-deb --fsys-tarfile "$work"/debs/*.deb | tar -x -C "$work" --wildcards './usr/src/*.tar.xz'
rm -rf "$work/debs"
tar -xJf "$work"/usr/src/linux-source-*.tar.xz -C "$work"
rm -rf "$work/usr"
src=$(find "$work" -maxdepth 1 -type d -name 'linux-source-*' | head -n1)
[[ -n $src ]] || die "no source tree in $pkg"
log "configuring ARCH=um ($(gcc --version | head -n1))"
(
    cd "$src"
    make -s ARCH=um defconfig >&2
    for o in "${OPTIONS[@]}"; do scripts/config --enable "$o"; done
    for o in "${OFF[@]}"; do scripts/config --disable "$o"; done
    make -s ARCH=um olddefconfig >&2
    # Options whose dependencies this tree lacks are dropped by olddefconfig: name them.
    for o in "${OPTIONS[@]}"; do
        grep -q "^CONFIG_$o=y" .config || log "note: CONFIG_$o is not available in $pkg"
    done
    for o in NET_VRF VXLAN VETH BRIDGE NF_TABLES_IPV4 NFT_NAT IP_NF_NAT HOSTFS; do
        grep -q "^CONFIG_$o=y" .config || die "CONFIG_$o could not be enabled"
    done
    log "building linux.uml with $JOBS jobs"
    nice make -s ARCH=um -j"$JOBS" linux >&2
    release=$(make -s ARCH=um kernelrelease)
    mkdir -p "$work/root/usr/bin" "$work/root/usr/lib/uml/modules"
    strip -o "$work/root/usr/bin/linux.uml" linux
    # Everything is built in (no loadable modules, so no modules_install): the module
    # index lists the built-ins so modprobe in the guest succeeds without loading anything.
    mkdir -p "$work/root/usr/lib/uml/modules/$release"
    cp modules.builtin modules.builtin.modinfo "$work/root/usr/lib/uml/modules/$release/"
    touch "$work/root/usr/lib/uml/modules/$release/modules.dep"
    cp .config "$work/root/usr/lib/uml/modules/$release/config"
)
rm -rf "$out"
mv "$work/root" "$out"
rm -rf "$work"
trap - EXIT
log "built $pkg $version in $(( $(date +%s) - began )) s"
echo "$out"
