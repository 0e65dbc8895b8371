"""Wire codec between the CNI shim (``shim/pyroute2-cni.c``) and the daemon.

The shim is a zmq REQ peer; the daemon binds a ROUTER.  After the ROUTER
envelope (routing id, empty delimiter) a request carries three frames::

    b"PYROUTE2-CNI/1"                       protocol tag
    b"CNI_COMMAND=ADD\\nCNI_IFNAME=eth0\\n"   CNI_* environment, KEY=VALUE lines
    b'{"cniVersion": ...}'                  stdin verbatim (may be empty or bad JSON)

and a reply carries two frames: the ASCII decimal exit status and the bytes
the shim prints on stdout.  The daemon sends ``envelope + encode_reply(...)``.

This module is pure: no zmq import, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ENV_KEYS",
    "PROTOCOL_TAG",
    "BadRequest",
    "ShimRequest",
    "encode_reply",
    "encode_request",
    "parse_request",
    "split_envelope",
]

PROTOCOL_TAG = b"PYROUTE2-CNI/1"

# CNI_* environment variable -> ShimRequest field.
ENV_KEYS: dict[str, str] = {
    "CNI_COMMAND": "command",
    "CNI_CONTAINERID": "container_id",
    "CNI_NETNS": "netns",
    "CNI_IFNAME": "ifname",
    "CNI_ARGS": "args",
    "CNI_PATH": "path",
}


class BadRequest(ValueError):
    """The frames are not a well-formed shim request."""


@dataclass(frozen=True, slots=True)
class ShimRequest:
    """One CNI call as forwarded by the shim.

    Environment variables the runtime did not set are empty strings.
    """

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: str = ""
    path: str = ""
    stdin: bytes = b""

    def cni_args(self) -> dict[str, str]:
        """CNI_ARGS (``K=V;K2=V2``) as a dict; items without ``=`` are ignored."""
        result: dict[str, str] = {}
        for item in self.args.split(";"):
            key, sep, value = item.partition("=")
            if sep and key:
                result[key] = value
        return result


def split_envelope(message: Sequence[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Split a ROUTER message into (envelope including the delimiter, body).

    Raises BadRequest when there is no empty delimiter frame.
    """
    frames = [bytes(f) for f in message]
    for index, frame in enumerate(frames):
        if not frame:
            return frames[: index + 1], frames[index + 1 :]
    raise BadRequest("no empty delimiter frame: the peer is not a zmq REQ socket")


def _parse_env(frame: bytes) -> dict[str, str]:
    try:
        text = frame.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"environment frame is not UTF-8: {exc}") from None
    if text and not text.endswith("\n"):
        raise BadRequest("environment frame does not end with a newline")
    env: dict[str, str] = {}
    for number, line in enumerate(text.split("\n")[:-1], start=1):
        key, sep, value = line.partition("=")
        if not sep:
            raise BadRequest(f"environment line {number} has no '=': {line[:80]!r}")
        if key not in ENV_KEYS:
            raise BadRequest(f"environment line {number}: unexpected variable {key[:80]!r}")
        if key in env:
            raise BadRequest(f"environment line {number}: {key} given twice")
        env[key] = value
    return env


def parse_request(frames: Sequence[bytes]) -> ShimRequest:
    """Decode the frames after the ROUTER envelope into a ShimRequest."""
    if len(frames) != 3:
        raise BadRequest(f"expected 3 frames (tag, environment, stdin), got {len(frames)}")
    tag, env_frame, stdin = (bytes(f) for f in frames)
    if tag != PROTOCOL_TAG:
        raise BadRequest(
            f"protocol tag {tag[:40]!r} is not {PROTOCOL_TAG!r}: shim and daemon versions differ"
        )
    env = _parse_env(env_frame)
    command = env.get("CNI_COMMAND", "")
    if not command:
        raise BadRequest("CNI_COMMAND is missing or empty")
    fields = {field: env.get(key, "") for key, field in ENV_KEYS.items()}
    return ShimRequest(
        command=command,
        container_id=fields["container_id"],
        netns=fields["netns"],
        ifname=fields["ifname"],
        args=fields["args"],
        path=fields["path"],
        stdin=stdin,
    )


def encode_request(request: ShimRequest) -> list[bytes]:
    """The frames the shim sends for `request` (after its delimiter); for tests and tools."""
    lines = []
    for key, field in ENV_KEYS.items():
        value: str = getattr(request, field)
        if "\n" in value:
            raise ValueError(f"{key} contains a newline")
        if value or key == "CNI_COMMAND":
            lines.append(f"{key}={value}\n")
    return [PROTOCOL_TAG, "".join(lines).encode("utf-8"), request.stdin]


def encode_reply(status: int, output: bytes) -> list[bytes]:
    """The reply frames (without envelope): exit status, then stdout bytes."""
    if isinstance(status, bool) or not isinstance(status, int) or not 0 <= status <= 255:
        raise ValueError(f"exit status must be an int in 0..255, got {status!r}")
    return [str(status).encode("ascii"), bytes(output)]
