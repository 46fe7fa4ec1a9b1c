"""The web app over real HTTP, served by uvicorn as `illuminate serve` does."""

from __future__ import annotations

import gzip
import json
import threading
import time
from datetime import timedelta

import httpx
import pytest
import uvicorn

from tests.integration.conftest import DEADLINE, wait_until, whole_second, window_campaign
from tests.support.mosquitto import CONTROLLER_PASSWORD, free_port

pytestmark = pytest.mark.broker

STATUS = "/api/v1/public/status"


@pytest.fixture
def served(rig_factory):
    rig = rig_factory(3)
    controller = rig.start_controller()
    opens = whole_second(2)
    rig.register(window_campaign(opens, opens + timedelta(seconds=60)))
    rig.start_fleet()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(controller.web, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_until(lambda: server.started, timeout=DEADLINE)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        # the first rendering is built in the background; until then the status is 503
        assert wait_until(lambda: client.get(STATUS).status_code == 200, timeout=60)
        yield rig, client
    server.should_exit = True
    thread.join(timeout=10)


def test_public_status_contract_etag_and_privacy(served):
    _rig, http = served
    assert wait_until(
        lambda: http.get("/api/v1/public/status").json()["summary"]["lit"] == 3, timeout=DEADLINE
    )
    response = http.get("/api/v1/public/status")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"generated_at", "summary", "sites"}
    assert set(body["summary"]) == {
        "total",
        "lit",
        "pending",
        "unconfirmed",
        "offline",
        "scheduled",
        "off",
    }
    for site in body["sites"]:
        assert set(site) <= {
            "id",
            "name",
            "city",
            "lat",
            "lon",
            "state",
            "confirmed_at",
            "confirmed_by",
            "window",
            "color",
        }
        assert site["state"] == "lit"
        assert site["confirmed_by"] == "echo"  # agents without a light sensor
        assert set(site["window"]) == {"start", "end"}
    text = response.text
    for secret in ("dev-0", "illuminate/v1", "pw-0", CONTROLLER_PASSWORD, "127.0.0.1", "ctl"):
        assert secret not in text
    assert "max-age" in response.headers["cache-control"]
    assert response.headers["vary"] == "Accept-Encoding"
    assert response.headers["content-type"] == "application/json"

    # the same document, gzipped for a client that takes gzip; as is for one that does not
    raw = http.get(STATUS, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in raw.headers
    with http.stream("GET", STATUS, headers={"Accept-Encoding": "gzip"}) as zipped:
        assert zipped.headers["content-encoding"] == "gzip"
        assert zipped.headers["vary"] == "Accept-Encoding"
        packed = b"".join(zipped.iter_raw())
    assert gzip.decompress(packed) == raw.content
    unzipped = json.loads(raw.content)
    assert (unzipped["summary"], unzipped["sites"]) == (body["summary"], body["sites"])

    etag = response.headers["etag"]
    again = http.get("/api/v1/public/status", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.headers["etag"] == etag
    assert again.content == b""
    assert again.headers["vary"] == "Accept-Encoding"
    zipped_again = http.get(STATUS, headers={"If-None-Match": etag, "Accept-Encoding": "gzip"})
    assert zipped_again.status_code == 304
    stale = http.get("/api/v1/public/status", headers={"If-None-Match": '"something-else"'})
    assert stale.status_code == 200


def test_etag_changes_when_a_site_changes(served):
    _rig, http = served
    first = http.get("/api/v1/public/status")
    assert wait_until(
        lambda: http.get("/api/v1/public/status").json()["summary"]["lit"] == 3, timeout=DEADLINE
    )
    later = http.get("/api/v1/public/status", headers={"If-None-Match": first.headers["etag"]})
    assert later.status_code == 200
    assert later.headers["etag"] != first.headers["etag"]


def test_page_health_ready_and_metrics(served):
    rig, http = served
    page = http.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "/static/app.js" in page.text
    assert http.get("/static/app.js").status_code == 200
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True, "broker": True, "intake": True}
    metrics = http.get("/metrics").text
    assert "illuminate_plans_published_total" in metrics

    rig.controller.broker.stop()  # broker connection gone: not ready, but alive
    time.sleep(0.2)
    not_ready = http.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"] == {"database": True, "broker": False, "intake": True}
    assert http.get("/healthz").status_code == 200
    json.loads(http.get("/api/v1/public/status").text)  # still serves the page data
