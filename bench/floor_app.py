"""The floor of `status-load`: a bare ASGI app serving pre-rendered bytes.

`BENCH_BODY_FILE` holds the body and `BENCH_ETAG` its ETag (the controller's answer,
copied). Every GET answers 200 with those bytes, or 304 when If-None-Match matches.
Run it as `uvicorn bench.floor_app:app`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

BODY = Path(os.environ.get("BENCH_BODY_FILE", "/dev/null")).read_bytes()
ETAG = os.environ.get("BENCH_ETAG", '"floor"').encode()
HEADERS_200 = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
    (b"etag", ETAG),
    (b"cache-control", b"public, max-age=5"),
]
HEADERS_304 = [(b"etag", ETAG), (b"cache-control", b"public, max-age=5")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    match = any(k == b"if-none-match" and v == ETAG for k, v in scope["headers"])
    if match:
        await send({"type": "http.response.start", "status": 304, "headers": HEADERS_304})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS_200})
    await send({"type": "http.response.body", "body": BODY})
