"""The lab's API relay: the API server's loopback address inside each node namespace."""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.harness.procs import netns_socket


class ApiRelay:
    """127.0.0.1:<port> inside each node namespace, relayed to the API server's loopback.

    On a real node the daemon reaches the API server over the node's network; here the
    API server listens on the root namespace's loopback (its certificate names 127.0.0.1),
    so each node namespace gets a TCP relay on the same address and port and the one
    kubeconfig works everywhere.  TLS passes through untouched.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self._listeners: list[socket.socket] = []
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def add(self, netns: str, port: int | None = None) -> None:
        """Listen in `netns` on 127.0.0.1:`port` (the API server's own port by default)."""
        listener = netns_socket(netns)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port if port is None else port))
        listener.listen(64)
        self._listeners.append(listener)
        threading.Thread(
            target=self._accept, args=(listener,), name=f"api-relay-{netns}", daemon=True
        ).start()

    def _accept(self, listener: socket.socket) -> None:
        while not self._closed.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                for sock in (src, dst):
                    if sock in self._conns:
                        self._conns.discard(sock)
                        sock.close()

    def close(self) -> None:
        self._closed.set()
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        self._listeners.clear()
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
