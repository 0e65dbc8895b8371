"""The rtnetlink wire: a netlink socket, its framing, and request/ack and dumps over it.

One request at a time over a socket the caller owns (no event loop, no helper process).
Messages are pyroute2's message classes, encoded and decoded by the caller's ``cls``; this
module does not import pyroute2.  Errors are ``OSError`` with the kernel's errno and its
extended ack message when it sent one.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
from collections.abc import Callable, Iterable
from typing import Any

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_ACK_TLVS = 0x200
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLMSGERR_ATTR_MSG = 1

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34

IFF_UP = 0x1
IFA_F_SECONDARY = 0x01
RTEXT_FILTER_SKIP_STATS = 1 << 3
FR_ACT_TO_TBL = 1
RT_SCOPE_UNIVERSE = 0
IN6_ADDR_GEN_MODE_NONE = 1

_HDR = struct.Struct("=IHHII")


def netlink_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, 0))
        for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK):
            try:
                sock.setsockopt(SOL_NETLINK, option, 1)
            except OSError as exc:
                if exc.errno != errno.ENOPROTOOPT:
                    raise
    except BaseException:
        sock.close()
        raise
    return sock


# -- one netlink channel ----------------------------------------------------------


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, for requests encoded by hand (see ``Rtnl.request_raw``)."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


NLA_F_NESTED = 0x8000


def nest(kind: int, payload: bytes) -> bytes:
    # Newer kernels (seen on 7.2) reject IFLA_INET_CONF & co without the nested flag.
    return attr(kind | NLA_F_NESTED, payload)


def split_messages(data: bytes) -> Iterable[tuple[int, int, int, bytes]]:
    """(type, flags, sequence, bytes) of each netlink message in one datagram."""
    offset = 0
    while offset + _HDR.size <= len(data):
        length, mtype, flags, seq, _pid = _HDR.unpack_from(data, offset)
        if length < _HDR.size:
            return
        yield mtype, flags, seq, data[offset : offset + length]
        offset += (length + 3) & ~3


class Rtnl:
    """Synchronous request/ack and dumps over one netlink socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._seq = itertools.count(1)

    def close(self) -> None:
        self.sock.close()

    def _send(self, msg: Any, mtype: int, flags: int) -> int:
        seq = next(self._seq)
        msg["header"]["type"] = mtype
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = seq
        msg["header"]["pid"] = 0
        msg.encode()
        self.sock.send(bytes(msg.data))
        return seq

    def _messages(self, seq: int) -> Iterable[tuple[int, int, bytes]]:
        """Yield (type, flags, bytes) of every message answering `seq`."""
        while True:
            for mtype, flags, mseq, chunk in split_messages(self.sock.recv(1 << 18)):
                if mseq != seq:
                    continue  # a stale answer to an earlier, abandoned request
                yield mtype, flags, chunk

    @staticmethod
    def error_of(chunk: bytes, flags: int, what: str) -> OSError | None:
        (code,) = struct.unpack_from("=i", chunk, _HDR.size)
        if code == 0:
            return None
        code = -code
        detail = ""
        if flags & NLM_F_ACK_TLVS:
            # With NETLINK_CAP_ACK the echoed request is only its header.
            offset = _HDR.size + 4 + _HDR.size
            while offset + 4 <= len(chunk):
                alen, atype = struct.unpack_from("=HH", chunk, offset)
                if alen < 4:
                    break
                if atype & 0x3FFF == NLMSGERR_ATTR_MSG:
                    detail = (
                        chunk[offset + 4 : offset + alen].split(b"\0")[0].decode("utf-8", "replace")
                    )
                offset += (alen + 3) & ~3
        text = os.strerror(code) + (f": {detail}" if detail else "")
        return OSError(code, f"{what}: {text}")

    def request(self, msg: Any, mtype: int, flags: int, what: str) -> None:
        self._ack(self._send(msg, mtype, flags | NLM_F_REQUEST | NLM_F_ACK), what)

    def request_raw(self, body: bytes, mtype: int, flags: int, what: str) -> None:
        """A request encoded by the caller (everything after the netlink header)."""
        seq = next(self._seq)
        header = _HDR.pack(_HDR.size + len(body), mtype, flags | NLM_F_REQUEST | NLM_F_ACK, seq, 0)
        self.sock.send(header + body)
        self._ack(seq, what)

    @classmethod
    def _check(cls, chunk: bytes, flags: int, what: str) -> None:
        """Raise the error an NLMSG_ERROR carries; return on an ack (error 0)."""
        err = cls.error_of(chunk, flags, what)
        if err is not None:
            raise err

    @staticmethod
    def _reply(cls: Any, chunk: bytes) -> Any:
        reply = cls(chunk)
        reply.decode()
        return reply

    def _ack(self, seq: int, what: str) -> None:
        for rtype, rflags, chunk in self._messages(seq):
            if rtype == NLMSG_ERROR:
                self._check(chunk, rflags, what)
                return

    def get(self, msg: Any, mtype: int, cls: Any, what: str) -> Any:
        seq = self._send(msg, mtype, NLM_F_REQUEST)
        for rtype, rflags, chunk in self._messages(seq):
            if rtype == NLMSG_ERROR:
                self._check(chunk, rflags, what)
                continue
            return self._reply(cls, chunk)
        raise AssertionError("unreachable")

    def dump(self, make: Callable[[], Any], mtype: int, cls: Any, what: str) -> list[Any]:
        for _attempt in range(10):
            seq = self._send(make(), mtype, NLM_F_REQUEST | NLM_F_DUMP)
            replies: list[Any] = []
            interrupted = False
            for rtype, rflags, chunk in self._messages(seq):
                if rflags & NLM_F_DUMP_INTR:
                    interrupted = True
                if rtype == NLMSG_DONE:
                    if len(chunk) >= _HDR.size + 4:
                        (code,) = struct.unpack_from("=i", chunk, _HDR.size)
                        if code < 0:
                            raise OSError(-code, f"{what}: {os.strerror(-code)}")
                    break
                if rtype == NLMSG_ERROR:
                    self._check(chunk, rflags, what)
                    break
                replies.append(self._reply(cls, chunk))
            if not interrupted:
                return replies
        raise OSError(errno.EINTR, f"{what}: dump kept being interrupted")
