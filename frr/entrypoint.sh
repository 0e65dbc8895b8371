#!/bin/bash
# Entrypoint of the pyroute2-frr container.
#
# 1. Seed /etc/frr (a volume shared with the pyroute2-cni container, so the
#    image's own /etc/frr is hidden): daemons and vtysh.conf always come from
#    the image; frr.conf only when there is none yet, so a restarted container
#    boots with the configuration the daemon applied last.
# 2. Forward FRR's syslog messages to stdout (`kubectl logs -c pyroute2-frr`).
# 3. Run watchfrr in the foreground; it starts zebra, bgpd and staticd (as
#    listed in /etc/frr/daemons), loads their configuration with `vtysh -b`
#    and restarts any daemon that dies; the restarted daemon gets its part of
#    frr.conf back (watchfrr.sh -> frrcommon.sh daemon_start -> `vtysh -b -d
#    <daemon>`).  So frr.conf must always hold the last good configuration:
#    the FRRActor puts it back after a failed reload (frr-reload.py's closing
#    `write` saves whatever FRR runs, a half-applied mix included).
# 4. On SIGTERM/SIGINT stop watchfrr, then the daemons (zebra first; it keeps
#    its kernel routes, see zebra_options in daemons), and exit 0.  If watchfrr
#    itself dies, stop the daemons and exit 1 so the kubelet restarts us.
# No `set -u`: frrcommon.sh reads unset variables.

SEED_DIR="${FRR_SEED_DIR:-/usr/share/pyroute2-cni/frr}"
CONF_DIR=/etc/frr
RUN_DIR=/var/run/frr
STOP_TIMEOUT="${FRR_STOP_TIMEOUT:-20}"

log() { echo "pyroute2-frr: $*" >&2; }
# frrcommon.sh expects the LSB logging helpers.
log_success_msg() { log "$@"; }
log_warning_msg() { log "warning: $*"; }
log_failure_msg() { log "error: $*"; }

seed() {
    install -d -o frr -g frr -m 0755 "$CONF_DIR" "$RUN_DIR" /var/log/frr /var/tmp/frr
    install -o frr -g frr -m 0640 "$SEED_DIR/daemons" "$CONF_DIR/daemons"
    install -o frr -g frr -m 0640 "$SEED_DIR/vtysh.conf" "$CONF_DIR/vtysh.conf"
    if [ ! -s "$CONF_DIR/frr.conf" ]; then
        install -o frr -g frr -m 0640 "$SEED_DIR/frr.conf" "$CONF_DIR/frr.conf"
        log "seeded $CONF_DIR/frr.conf"
    else
        log "keeping existing $CONF_DIR/frr.conf"
        chown frr:frr "$CONF_DIR/frr.conf"
    fi
}

syslog_pid=""
start_syslog() {
    if command -v busybox >/dev/null 2>&1; then
        busybox syslogd -n -O - &
        syslog_pid=$!
    else
        log "warning: busybox not found; FRR's syslog messages are dropped"
    fi
}

watchfrr_pid=""
stopping=0

stop_all() {
    if [ -n "$watchfrr_pid" ] && kill -0 "$watchfrr_pid" 2>/dev/null; then
        kill -TERM "$watchfrr_pid" 2>/dev/null
        for _ in $(seq "$STOP_TIMEOUT"); do
            kill -0 "$watchfrr_pid" 2>/dev/null || break
            sleep 1
        done
        kill -KILL "$watchfrr_pid" 2>/dev/null
    fi
    # zebra first: with --retain it leaves its kernel routes in place, and once it is
    # gone bgpd's shutdown cannot withdraw them, so this node keeps forwarding to
    # its peers while FRR restarts.  Then everything else (frrcommon.sh).
    daemon_stop zebra
    all_stop --reallyall
    if [ -n "$syslog_pid" ]; then
        kill -TERM "$syslog_pid" 2>/dev/null
        wait "$syslog_pid" 2>/dev/null
    fi
}

on_signal() {
    [ "$stopping" = 1 ] && return
    stopping=1
    log "stopping FRR"
    stop_all
    log "stopped"
    exit 0
}

seed || { log "error: cannot prepare $CONF_DIR"; exit 1; }

# Reads $CONF_DIR/daemons; defines daemon_list, all_stop, watchfrr_options ...
# shellcheck source=/dev/null
. /usr/lib/frr/frrcommon.sh

trap on_signal TERM INT
start_syslog

daemon_list daemons
log "starting watchfrr for: $daemons"
# shellcheck disable=SC2086 # word splitting of the option and daemon lists is intended
/usr/lib/frr/watchfrr $watchfrr_options $daemons &
watchfrr_pid=$!

# `wait` returns early when a trapped signal arrives; the trap then exits.
status=0
while :; do
    wait "$watchfrr_pid"
    status=$?
    kill -0 "$watchfrr_pid" 2>/dev/null || break
done
[ "$stopping" = 1 ] && exit 0
log "error: watchfrr exited with status $status; stopping the daemons"
stop_all
exit 1
