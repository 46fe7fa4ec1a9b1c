"""Hostile input over real HTTP, on SQLite and on PostgreSQL: always 4xx, never 5xx.

The app is `build_web(...)` served by uvicorn on a free port (as in test_staff_api.py).
Its evaluation clock is the fake one of those tests, whose monotonic reading never
moves: the pathological campaigns below are refused by counting, not by the deadline.
The few time checks use a generous deadline, only to catch a spin.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.metrics import Metrics
from controller.settings import PublicSettings
from controller.store.db import make_engine
from controller.store.users import Users
from controller.web.app import build_web
from controller.web.headers import DOCS_POLICY, PAGE_POLICY, page_policy, tile_source
from tests.controller.test_staff_api import (
    CATALOG,
    NOW,
    FakeClock,
    campaign_body,
    public_view,
    serve,
)
from tests.support.stores import SQL_KINDS, sql_database

GENEROUS_S = 10.0
"""Far above the second a refusal takes; only a spin would take this long."""
PUT = "/api/v1/campaigns/blue-heart"


class Hostile:
    def __init__(self, http: httpx.Client, token: str, stores: Any) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {token}"}
        self.stores = stores

    def put(self, body: Any, path: str = PUT, **kw: Any) -> httpx.Response:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {**self.headers, "Content-Type": "application/json", **kw.pop("headers", {})}
        return self.http.put(path, content=raw, headers=headers, **kw)


@pytest.fixture(scope="module", params=SQL_KINDS)
def hostile(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hostile]:
    folder = tmp_path_factory.mktemp(request.param)
    with sql_database(request.param, folder) as (_, sessions, stores):
        stores.registry.import_catalog(CATALOG)
        users = Users(sessions)
        clock = FakeClock()
        app = build_web(
            stores,
            clock,
            Metrics(),
            public=public_view(stores, clock),
            ready=lambda: {"database": True},
            users=users,
        )
        token = users.add("cora", "coordinator", [], NOW)
        with serve(app) as http:
            yield Hostile(http, token, stores)
            assert http.get("/healthz").status_code == 200
            assert stores.campaigns.all() == ()  # nothing hostile was stored


def _refused(response: httpx.Response, status: int | None = None) -> Any:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if status is not None:
        assert response.status_code == status, response.text
    return response.json()


# ids -------------------------------------------------------------------------------

IDS = {
    "slash": "a%2Fb",
    "plus": "%2B",
    "hash": "%23",
    "dollar": "%24sys",
    "nul": "%00",
    "nul-inside": "blue%00heart",
    "upper": "Blue-Heart",
    "full-width": "%EF%BD%82%EF%BD%8C%EF%BD%95%EF%BD%85",  # "blue" in full-width letters
    "hyphen-look-alike": "blue%E2%80%90heart",  # U+2010
    "newline": "blue-heart%0A",
    "49-characters": "a" * 49,
    "leading-hyphen": "-blue",
}


@pytest.mark.parametrize("raw_id", IDS.values(), ids=IDS.keys())
def test_a_rejected_id_is_4xx_on_both_databases(hostile: Hostile, raw_id: str) -> None:
    path = f"/api/v1/campaigns/{raw_id}"
    got = _refused(hostile.http.get(path, headers=hostile.headers))
    put = _refused(hostile.put({k: v for k, v in campaign_body().items() if k != "id"}, path))
    for body in (got, put):
        if isinstance(body["detail"], list):  # reached the route: the id is named
            assert body["detail"][0]["path"] == "campaign_id"
            assert "not a valid id" in body["detail"][0]["message"]


def test_the_longest_id_is_accepted_then_removed_from_view(hostile: Hostile) -> None:
    longest = "a" * 48
    response = hostile.http.get(f"/api/v1/campaigns/{longest}", headers=hostile.headers)
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"id": "blue-heart\u0000"}, "id"),
        ({"title": {"en": "Blue\u0000Heart"}}, "title.en"),
        ({"title": {"en\u0000": "Blue"}}, "title.en\u0000"),
        ({"override": True, "on": False, "reason": "storm\u0000", "color": "#000000"}, "reason"),
    ],
)
def test_nul_in_a_body_is_422_on_both_databases(
    hostile: Hostile, changes: dict[str, Any], path: str
) -> None:
    body = _refused(hostile.put(campaign_body(**changes)), 422)
    assert any(
        item["path"].startswith(path.split(".")[0]) or item["path"] == "(top)"
        for item in body["detail"]
    )
    assert any(
        "control characters" in item["message"] or "must equal the id" in item["message"]
        for item in body["detail"]
    )


# bodies ----------------------------------------------------------------------------

FIFTY_MB = 50 * 1024 * 1024


def _raw_request(port: int, head: bytes, chunks: Iterator[bytes]) -> tuple[bytes, int]:
    """Send a request head then body chunks until the server answers; the answer and how
    many body bytes went out (the server must answer long before 50 MB)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=GENEROUS_S) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        answer = b""
        deadline = time.monotonic() + GENEROUS_S
        for chunk in chunks:
            with contextlib.suppress(BlockingIOError):
                answer += sock.recv(65536)
            if answer or time.monotonic() > deadline:
                break
            try:
                sock.sendall(chunk)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            except OSError:
                break
            sent += len(chunk)
        sock.setblocking(True)
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    return answer, sent


def _port(hostile: Hostile) -> int:
    return int(str(hostile.http.base_url).rsplit(":", 1)[1].strip("/"))


def _head(hostile: Hostile, framing: str) -> bytes:
    auth = hostile.headers["Authorization"]
    return (
        f"PUT {PUT} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\n\r\n"
    ).encode()


def test_a_50_mb_body_is_413_before_it_is_read(hostile: Hostile) -> None:
    chunk = b" " * 65536
    head = _head(hostile, f"Content-Length: {FIFTY_MB}")
    answer, sent = _raw_request(_port(hostile), head, (chunk for _ in range(FIFTY_MB // 65536)))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < FIFTY_MB // 4


def test_a_50_mb_chunked_body_is_413_as_it_streams(hostile: Hostile) -> None:
    piece = b" " * 65536
    chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
    head = _head(hostile, "Transfer-Encoding: chunked")
    answer, sent = _raw_request(_port(hostile), head, (chunk for _ in range(FIFTY_MB // 65536)))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < FIFTY_MB // 4


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 10_000 + b"]" * 10_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        json.dumps(campaign_body(windows=[])).encode()[:-1] + b',"x":' + b"[" * 10_000 + b"}",
    ],
    ids=["array", "object", "inside-a-campaign"],
)
def test_json_10000_deep_is_422(hostile: Hostile, raw: bytes) -> None:
    body = _refused(hostile.put(raw), 422)
    assert "nested more than 32 levels deep" in body["detail"][0]["message"]


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"colour": "#009EDB"}, "colour"),
        ({"windows": [{**campaign_body()["windows"][0], "repeat": "daily"}]}, "windows[0].repeat"),
        (
            {"windows": [{**campaign_body()["windows"][0], "targets": {"everyone": True}}]},
            "windows[0].targets.everyone",
        ),
    ],
)
def test_unknown_fields_are_422_naming_them(
    hostile: Hostile, changes: dict[str, Any], path: str
) -> None:
    body = _refused(hostile.put(campaign_body(**changes)), 422)
    assert path in [item["path"] for item in body["detail"]]


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps(campaign_body(level="80")).encode(),
        json.dumps(campaign_body(level=2**70)).encode(),
        json.dumps(campaign_body(priority=-(2**63) - 1)).encode(),
        json.dumps(campaign_body(windows={})).encode(),
        json.dumps(campaign_body(title=["Blue"])).encode(),
        json.dumps(campaign_body(on="yes")).encode(),
        json.dumps(campaign_body(color=None)).encode(),
        b'{"id": "blue-heart", "level": 1e400}',
        b'{"id": "blue-heart", "level": NaN}',
        b'["not", "an", "object"]',
        b"",
        b"\xff\xfe",
    ],
)
def test_wrong_types_are_422(hostile: Hostile, raw: bytes) -> None:
    _refused(hostile.put(raw), 422)


# pathological recurrence rules -------------------------------------------------------


def _daily(rule: str = "FREQ=DAILY", **window: Any) -> dict[str, Any]:
    return {
        "targets": {"all": True},
        "rrule": rule,
        "start": {"at": "21:30"},
        "end": {"at": "23:00"},
        **window,
    }


PATHOLOGICAL = {
    "never-advances": ([_daily("FREQ=DAILY;INTERVAL=0")], "windows[0].rrule", "never advances"),
    "never-occurs": (
        [_daily(), _daily("FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30")],
        "windows[1].rrule",
        "never occurs",
    ),
    "never-occurs-monthly": (
        [_daily("FREQ=MONTHLY;BYMONTH=4;BYMONTHDAY=31")],
        "windows[0].rrule",
        "never occurs",
    ),
    "ended": ([_daily("FREQ=DAILY;UNTIL=20200101")], "windows[0].rrule", "never occurs"),
    "times-of-day": (
        [_daily("FREQ=DAILY;BYHOUR=0,1,2,3,4,5,6,7,8,9,10,11;BYMINUTE=0,15,30,45")],
        "windows[0].rrule",
        "BYHOUR",
    ),
    "huge-expansion": (
        [_daily() for _ in range(1000)],
        "windows[124]",
        "more than the limit of 50,000",
    ),
}


@pytest.mark.parametrize(
    ("windows", "path", "words"), PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys()
)
def test_pathological_rules_are_422_naming_the_rule_at_once(
    hostile: Hostile, windows: list[dict[str, Any]], path: str, words: str
) -> None:
    started = time.monotonic()
    response = hostile.put(campaign_body(windows=windows), timeout=GENEROUS_S)
    elapsed = time.monotonic() - started
    body = _refused(response, 422)
    item = next(i for i in body["detail"] if i["path"] == path)
    assert words in item["message"]
    assert elapsed < GENEROUS_S


# headers and documentation routes ---------------------------------------------------


def test_security_headers_are_sent_as_headers(hostile: Hostile) -> None:
    # the public page also takes images from its map's tile host, and nothing else more
    tiles = page_policy(tile_source(PublicSettings().map_tiles))
    for path in ("/", "/api/v1/public/status", "/healthz", "/api/openapi.json", "/nowhere"):
        response = hostile.http.get(path)
        policy = tiles if path == "/" else PAGE_POLICY
        assert response.headers["content-security-policy"] == policy, path
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    refused = hostile.put(b"[" * 10_000)
    assert refused.headers["x-content-type-options"] == "nosniff"
    docs = hostile.http.get("/api/docs")
    assert docs.status_code == 200
    assert docs.headers["content-security-policy"] == DOCS_POLICY
    assert "frame-ancestors 'none'" in DOCS_POLICY


def test_only_the_documented_doc_routes_exist(hostile: Hostile) -> None:
    assert hostile.http.get("/api/openapi.json").status_code == 200
    assert hostile.http.get("/api/docs").status_code == 200
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect", "/api/redoc"):
        assert hostile.http.get(path).status_code == 404, path


def test_the_sqlite_file_is_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "data" / "illuminate.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        connection.commit()
    engine.dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for sibling in path.parent.iterdir():
        assert stat.S_IMODE(sibling.stat().st_mode) & 0o077 == 0, sibling
    assert os.access(path, os.R_OK | os.W_OK)
