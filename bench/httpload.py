"""A small HTTP/1.1 keep-alive load generator on raw asyncio streams, and plain GETs.

Each client holds one connection and sends the next request when the previous answer
is read in full, for a fixed time after a short warm-up. Latencies are measured per
request on the monotonic clock.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LoadResult:
    clients: int
    seconds: float
    requests: int
    statuses: dict[int, int]
    errors: int
    rps: float
    p50_s: float | None
    p99_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "requests": self.requests,
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "errors": self.errors,
            "rps": round(self.rps, 1),
            "p50_ms": None if self.p50_s is None else round(self.p50_s * 1e3, 2),
            "p99_ms": None if self.p99_s is None else round(self.p99_s * 1e3, 2),
        }


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    if status in (204, 304) or 100 <= status < 200:
        return status
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _client(
    host: str,
    port: int,
    request: bytes,
    warm_until: float,
    stop_at: float,
    latencies: list[float],
    statuses: dict[int, int],
    errors: list[int],
) -> None:
    writer = None
    try:
        reader, writer = await asyncio.open_connection(host, port)
        while True:
            start = time.monotonic()
            if start >= stop_at:
                break
            writer.write(request)
            status = await _read_response(reader)
            end = time.monotonic()
            if start >= warm_until:
                latencies.append(end - start)
                statuses[status] = statuses.get(status, 0) + 1
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        errors.append(1)
    finally:
        if writer is not None:
            writer.close()


async def _run(
    host: str, port: int, path: str, headers: dict[str, str], clients: int, seconds: float
) -> LoadResult:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: keep-alive"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[int] = []
    warm = min(1.0, seconds / 5)
    now = time.monotonic()
    warm_until, stop_at = now + warm, now + warm + seconds
    await asyncio.gather(
        *(
            _client(host, port, request, warm_until, stop_at, latencies, statuses, errors)
            for _ in range(clients)
        )
    )
    latencies.sort()
    n = len(latencies)
    return LoadResult(
        clients=clients,
        seconds=seconds,
        requests=n,
        statuses=statuses,
        errors=len(errors),
        rps=n / seconds,
        p50_s=statistics.median(latencies) if n else None,
        p99_s=latencies[min(n - 1, int(n * 0.99))] if n else None,
    )


def load(
    host: str,
    port: int,
    path: str,
    clients: int,
    seconds: float,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """`clients` keep-alive connections asking `path` for `seconds` (after a warm-up)."""
    return asyncio.run(_run(host, port, path, headers or {}, clients, seconds))


def get(
    host: str, port: int, path: str, timeout: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def put_json(
    host: str, port: int, path: str, body: Any, token: str, timeout: float = 60.0
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(
            "PUT",
            path,
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()
