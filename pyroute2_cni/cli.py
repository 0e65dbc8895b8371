"""Command line: `pyroute2-cni <command>`; each command explains itself in --help."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pyroute2_cni import __version__
from pyroute2_cni.runtime.config import ConfigError, describe_defaults, load_settings
from pyroute2_cni.runtime.logsetup import setup_logging


def _cmd_daemon(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"pyroute2-cni: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.logging.level, settings.logging.format)
    from pyroute2_cni.daemon.run import run_daemon
    from pyroute2_cni.daemon.wiring import build_actor_specs, shutdown_linger

    return run_daemon(settings, build_actor_specs, linger=shutdown_linger(settings))


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"pyroute2-cni {__version__}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    if args.check:
        try:
            load_settings(args.check)
        except ConfigError as exc:
            print(f"pyroute2-cni: {exc}", file=sys.stderr)
            return 2
        print(f"{args.check}: ok")
        return 0
    print(describe_defaults())
    return 0


def _cmd_ipam_check(args: argparse.Namespace) -> int:
    from pyroute2_cni.ipam.check import run_ipam_check

    return run_ipam_check(kubeconfig=args.kubeconfig, as_json=args.json, node=args.node)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyroute2-cni",
        description="Kubernetes CNI and node daemon for VRFs and BGP EVPN fabrics.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    daemon = sub.add_parser(
        "daemon",
        help="run the node daemon (the DaemonSet's command)",
        description=(
            "Run the node daemon: watches the cluster's VRFDomains, claims IP blocks, "
            "programs VRFs, bridges and VXLANs, drives FRR, serves the CNI shim on its "
            "zmq socket and exposes /livez, /readyz and /metrics. Exits 0 on SIGTERM, "
            "1 when an actor keeps failing, 2 on a bad configuration."
        ),
    )
    daemon.add_argument(
        "--config",
        metavar="PATH",
        help="server.ini to read (default /etc/pyroute2-cni/server.ini; all defaults if absent)",
    )
    daemon.set_defaults(func=_cmd_daemon)

    version = sub.add_parser("version", help="print the version", description="Print the version.")
    version.set_defaults(func=_cmd_version)

    config = sub.add_parser(
        "config",
        help="show server.ini keys and defaults, or check a file",
        description="Without options: print every server.ini section and key with its default "
        "and allowed values. With --check PATH: validate a file and exit non-zero on error.",
    )
    config.add_argument("--check", metavar="PATH", help="validate this server.ini")
    config.set_defaults(func=_cmd_config)

    ipam = sub.add_parser(
        "ipam", help="IPAM maintenance", description="Inspect the IPBlock custom resources."
    )
    ipam_sub = ipam.add_subparsers(dest="ipam_command", metavar="IPAM_COMMAND", required=True)
    check = ipam_sub.add_parser(
        "check",
        help="report leaked, duplicate and inconsistent allocations",
        description=(
            "Check every IPBlock: addresses held for pods that no longer exist, duplicate "
            "addresses, blocks of missing nodes, ALLOCATED counts that disagree with the "
            "records, blocks outside their VRFDomain's prefix. Exits 1 when anything is wrong."
        ),
    )
    check.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig (default: in-cluster)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument(
        "--node",
        metavar="NAME",
        default="",
        help="also compare this node's pod interfaces with its records (run it on that node: "
        "an address plumbed without a record, a record without an interface)",
    )
    check.set_defaults(func=_cmd_ipam_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
