"""A minimal HTTP/1.1 keep-alive client on raw asyncio streams, and a closed-loop load driver.

No HTTP library: a request is one pre-encoded write, a response is a status line, headers and
a Content-Length (or chunked) body. That keeps the client's own CPU cost per request in the
tens of microseconds, which matters on a 2-core machine where client and server share cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024


class HttpError(Exception):
    """The server's answer was not parseable HTTP/1.1, or the connection broke."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


def encode_request(
    method: str, host: str, port: int, target: str, *, body: bytes = b"", content_type: str = ""
) -> bytes:
    """One complete request, ready to be written as is (and again, for a repeated GET)."""
    head = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}"]
    if method == "POST":
        if content_type:
            head.append(f"Content-Type: {content_type}")
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class Connection:
    """One keep-alive connection; reconnects on the next request after any error."""

    def __init__(self, host: str, port: int, source: str | None = None) -> None:
        self.host = host
        self.port = port
        self.source = source  # a local address to connect from (127.0.0.2: another client)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.connects = 0

    async def open(self) -> None:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self.host,
                self.port,
                limit=MAX_HEADER_BYTES,
                local_addr=(self.source, 0) if self.source else None,
            )
            self.connects += 1

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def abort(self) -> None:
        """Drop the connection without waiting (after a timeout or a protocol error)."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.transport.abort()

    async def send(self, request: bytes) -> HttpResponse:
        await self.open()
        assert self._reader is not None
        assert self._writer is not None
        reader = self._reader
        try:
            self._writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status, headers = _parse_head(head)
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body = await _read_chunked(reader)
            elif "content-length" in headers:
                length = int(headers["content-length"])
                if not 0 <= length <= MAX_BODY_BYTES:
                    raise HttpError(f"Content-Length {length}")
                body = await reader.readexactly(length)
            else:
                body = await reader.read(MAX_BODY_BYTES)  # until the server closes
                headers["connection"] = "close"
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self.abort()
            raise HttpError(f"{type(exc).__name__}: {exc}") from None
        except (HttpError, ValueError):
            self.abort()
            raise
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return HttpResponse(status, headers, body)


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise HttpError(f"bad status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


MAX_CHUNKS = 100_000
MAX_TRAILERS = 100


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    """A chunked body (bounded in size and chunk count; the caller bounds the time)."""
    chunks: list[bytes] = []
    total = 0
    for _ in range(MAX_CHUNKS):
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            # Trailers (none expected) end with an empty line.
            for _ in range(MAX_TRAILERS):
                if await reader.readuntil(b"\r\n") == b"\r\n":
                    return b"".join(chunks)
            raise HttpError("too many trailer lines")
        total += size
        if total > MAX_BODY_BYTES:
            raise HttpError("chunked body too large")
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
    raise HttpError("too many chunks")


@dataclass
class Sample:
    """One request of a load run."""

    index: int  # which request of the set (the message index for PKIOperation)
    finished: float  # perf_counter() when the answer was complete (or the error happened)
    latency: float  # seconds
    status: int  # HTTP status; 0 when there was no answer
    error: str = ""  # "timeout" or the connection error
    body: bytes = b""  # kept only when the run asks for it


@dataclass
class LoadResult:
    concurrency: int
    started: float
    window_end: float  # the deadline, or when the last worker stopped if that was earlier
    samples: list[Sample] = field(default_factory=list)
    connects: int = 0
    drawn: int = 0  # requests taken from the set (sent, or cancelled at the hard bound)
    exhausted: bool = False  # stopped because the request set ran out, not the clock

    @property
    def window(self) -> float:
        return max(self.window_end - self.started, 1e-9)


async def drive(
    host: str,
    port: int,
    request_for: Callable[[int], bytes],
    *,
    concurrency: int,
    seconds: float,
    max_requests: int,
    request_timeout: float,
    keep_body: Callable[[int], bool] = lambda _i: False,
    source: str | None = None,
) -> LoadResult:
    """Closed loop: ``concurrency`` workers, each on its own keep-alive connection, send
    ``request_for(0), request_for(1), ...`` until ``seconds`` have passed or ``max_requests``
    were sent, whichever comes first. Every request is bounded by ``request_timeout``, the
    whole run by ``seconds + request_timeout + 5``.
    """
    connections = [Connection(host, port, source) for _ in range(concurrency)]
    await asyncio.wait_for(asyncio.gather(*(c.open() for c in connections)), timeout=30)
    counter = iter(range(max_requests))
    samples: list[Sample] = []
    started = time.perf_counter()
    deadline = started + seconds
    exhausted = False
    drawn = 0

    async def worker(conn: Connection) -> None:
        nonlocal exhausted, drawn
        while time.perf_counter() < deadline:
            index = next(counter, None)
            if index is None:
                exhausted = True
                return
            drawn += 1
            request = request_for(index)
            sent = time.perf_counter()
            try:
                response = await asyncio.wait_for(conn.send(request), request_timeout)
            except TimeoutError:
                conn.abort()
                now = time.perf_counter()
                samples.append(Sample(index, now, now - sent, 0, "timeout"))
                continue
            except HttpError as exc:
                now = time.perf_counter()
                samples.append(Sample(index, now, now - sent, 0, str(exc)[:120]))
                await asyncio.sleep(0.01)  # do not spin on a refused connection
                continue
            now = time.perf_counter()
            body = response.body if keep_body(index) else b""
            samples.append(Sample(index, now, now - sent, response.status, "", body))

    tasks = [asyncio.create_task(worker(c)) for c in connections]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + request_timeout + 5)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in connections:
            await conn.close()
    last = max((s.finished for s in samples), default=started)
    window_end = deadline if not exhausted else min(deadline, last)
    return LoadResult(
        concurrency=concurrency,
        started=started,
        window_end=window_end,
        samples=samples,
        connects=sum(c.connects for c in connections),
        drawn=drawn,
        exhausted=exhausted,
    )


async def fetch(host: str, port: int, target: str, *, limit_s: float = 10.0) -> HttpResponse:
    """One GET on a fresh connection, bounded by ``limit_s``."""
    conn = Connection(host, port)
    try:
        return await asyncio.wait_for(
            conn.send(encode_request("GET", host, port, target)), timeout=limit_s
        )
    finally:
        await conn.close()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]
