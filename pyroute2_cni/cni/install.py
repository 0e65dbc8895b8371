"""Install the shim and the conflist on the host, atomically (write, fsync, rename)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pyroute2_cni.values.attachment import DEFAULT_NETWORK

CONFLIST_NAME = "10-pyroute2-cni.conflist"
SHIM_NAME = "pyroute2-cni"


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def conflist(socket: str, cni_version: str = "1.0.0") -> dict[str, Any]:
    """pyroute2-cni first; portmap chained after it (it reads prevResult).

    cniVersion is 1.0.0: libcni 1.1 (containerd 1.6/1.7) cannot parse a 1.1.0 result
    and portmap 1.1 refuses a 1.1.0 config.  `cniVersions` lets a libcni 1.2+ runtime
    pick 1.1.0 (STATUS, GC, interface MTU) where every plugin supports it.
    """
    return {
        "cniVersion": cni_version,
        "cniVersions": ["1.0.0", "1.1.0"],
        "name": DEFAULT_NETWORK,
        "plugins": [
            {"type": SHIM_NAME, "socket": socket},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }


def install_shim(source: str, bin_dir: str) -> Path:
    """Copy the static shim into the CNI bin dir unless the same bytes are there."""
    data = Path(source).read_bytes()
    target = Path(bin_dir) / SHIM_NAME
    if target.exists() and target.read_bytes() == data:
        return target
    _atomic_write(target, data, 0o755)
    return target


def install_conflist(conf_dir: str, socket: str) -> Path:
    target = Path(conf_dir) / CONFLIST_NAME
    data = (json.dumps(conflist(socket), indent=2) + "\n").encode()
    if target.exists() and target.read_bytes() == data:
        return target
    _atomic_write(target, data, 0o644)
    return target


def shim_available(source: str) -> bool:
    return Path(source).is_file() and shutil.which(source) is not None
