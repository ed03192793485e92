"""A cap on the connections one worker holds open, for a server that has none of its own.

Hypercorn accepts every connection it is offered: 20,100 idle connections from one client
were all accepted and held (issue 9, item 7). The cap works at two edges that need no
Hypercorn internals:

- the listening socket: :class:`CappedListener` is a ``socket.socket`` whose ``accept()``
  admits a connection only within the cap. asyncio's event loop accepts by calling
  ``accept()`` on the socket object it was given (``loop._accept_connection``), so the server
  never learns of a refused connection; the accepted socket tells the limiter when the
  transport closes it.
- the application: :meth:`ConnectionLimiter.wrap` marks a connection busy while one of its
  requests is in the ASGI application (found by ``scope["client"]``, the peer address).

At the cap, a new connection is not simply refused: the connection idle longest (a
keep-alive connection between requests, or one that has not yet sent a whole request head) is
shut down to make room, as nginx reuses idle keep-alive connections. An honest client
therefore gets in while the cap is held by idle or slow-header connections; only when every
connection has a request in progress (each bounded by the read and store deadlines) is the
new one closed at once.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]

_Peer = tuple[Any, ...]


def _peer(address: object) -> _Peer | None:
    """The (host, port) of an IP peer address (IPv6 addresses carry two more fields)."""
    if isinstance(address, tuple | list) and len(address) >= 2:
        return (address[0], address[1])
    return None


class _Connection:
    __slots__ = ("busy", "idle_since", "sock")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.busy = 0  # requests of this connection inside the application
        self.idle_since = now


class ConnectionLimiter:
    """The open connections of one worker, at most ``limit`` of them."""

    def __init__(self, limit: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1:
            raise ValueError("the connection limit must be 1 or more")
        self.limit = limit
        self._clock = clock
        # Least recently idle first: the first idle entry is the one to reclaim.
        self._open: OrderedDict[_Peer, _Connection] = OrderedDict()
        self.reclaimed = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, sock: socket.socket, peer: _Peer) -> bool:
        """Track a new connection; False (and nothing tracked) if it must be refused."""
        if len(self._open) >= self.limit and not self._reclaim_one():
            self.refused += 1
            if self.refused & (self.refused - 1) == 0:  # 1, 2, 4, ...: bounded log volume
                log.warning("connection cap %d reached: %d refused", self.limit, self.refused)
            return False
        # A previous entry of that address belongs to a connection that is gone.
        self._open.pop(peer, None)
        self._open[peer] = _Connection(sock, self._clock())
        return True

    def _reclaim_one(self) -> bool:
        for peer, connection in self._open.items():
            if connection.busy == 0:
                del self._open[peer]
                # Shut down, not closed: the transport still owns the descriptor; it reads
                # EOF, and the server closes the connection the ordinary way.
                with contextlib.suppress(OSError):  # already gone
                    connection.sock.shutdown(socket.SHUT_RDWR)
                self.reclaimed += 1
                return True
        return False

    def closed(self, sock: socket.socket, peer: _Peer) -> None:
        connection = self._open.get(peer)
        if connection is not None and connection.sock is sock:
            del self._open[peer]

    def _started(self, peer: _Peer) -> None:
        connection = self._open.get(peer)
        if connection is not None:
            connection.busy += 1

    def _finished(self, peer: _Peer) -> None:
        connection = self._open.get(peer)
        if connection is not None and connection.busy > 0:
            connection.busy -= 1
            if connection.busy == 0:
                connection.idle_since = self._clock()
                self._open.move_to_end(peer)

    def wrap(self, app: Asgi) -> Asgi:
        """The ASGI application ``app``, telling this limiter which connections are busy."""

        async def limited(scope: Scope, receive: Receive, send: Send) -> None:
            peer = _peer(scope.get("client")) if scope.get("type") == "http" else None
            if peer is None:
                await app(scope, receive, send)
                return
            self._started(peer)
            try:
                await app(scope, receive, send)
            finally:
                self._finished(peer)

        return limited


class _TrackedSocket(socket.socket):
    """An accepted connection that tells its limiter when it is closed."""

    limiter: ConnectionLimiter | None = None
    peer: _Peer = ()

    def close(self) -> None:
        limiter, self.limiter = self.limiter, None
        if limiter is not None:
            limiter.closed(self, self.peer)
        super().close()


class CappedListener(socket.socket):
    """A listening socket whose ``accept()`` admits connections through a limiter."""

    limiter: ConnectionLimiter

    @classmethod
    def wrapping(cls, sock: socket.socket, limiter: ConnectionLimiter) -> CappedListener:
        """Take over the descriptor of the listening socket ``sock``."""
        listener = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        listener.limiter = limiter
        return listener

    def accept(self) -> tuple[socket.socket, Any]:
        # What socket.socket.accept does, with a socket class that reports its close.
        fd, address = self._accept()  # type: ignore[attr-defined]
        conn = _TrackedSocket(self.family, self.type, self.proto, fileno=fd)
        if socket.getdefaulttimeout() is None and self.gettimeout():
            conn.setblocking(True)
        peer = _peer(address)
        if peer is None:
            return conn, address  # not an IP peer: not counted
        if not self.limiter.admit(conn, peer):
            conn.close()
            # asyncio's accept loop stops this round on ConnectionAbortedError and takes the
            # next pending connection on the next turn of the loop.
            raise ConnectionAbortedError("connection cap reached")
        conn.limiter, conn.peer = self.limiter, peer
        return conn, address
