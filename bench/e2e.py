"""End-to-end scenarios: the product run as an operator runs it, through real MQTT.

A private Mosquitto (the test rig's ACL, a password per device), `illuminate serve` in a
subprocess, the fleet as `illuminate simulate` shards, and campaigns put through the
staff API. A privileged observer client sees every device ack on the broker; the
database is only ever read read-only. Each timing stands beside a floor measured in the
same run: bare paho clients doing the least the same message flow needs.
"""

from __future__ import annotations

import functools
import json
import math
import re
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import httpload
from bench.fleet import (
    CAMPAIGN_ID,
    DEVICE_PASSWORD,
    Shard,
    catalog,
    one_per_site,
    register_fleet,
    shards,
    window_campaign,
)
from bench.flood import flood
from bench.inprocess import registration_floor
from bench.mqtt import AckObserver, PlanWatch, echo_floor, floor_ids
from bench.procs import BenchAborted, Children, rss_kib
from bench.report import row
from controller.public_view import MIN_INTERVAL_S as PUBLIC_TTL_S
from tests.support.mosquitto import (
    CONTROLLER_PASSWORD,
    CONTROLLER_USER,
    Mosquitto,
    free_port,
)

HOST = "127.0.0.1"
STATUS_PATH = "/api/v1/public/status"
WINDOW = timedelta(hours=2)
FIRST_WINDOW_IN = timedelta(hours=1)
UNCONFIRMED_SETTLE_S = 3.0
IDLE_SIMULATOR = (
    "import sys, time, devices.commands, devices.simulator; print('ready', flush=True); "
    "time.sleep(600)"
)
APPLIED_ACK_BYTES = 230  # about the size of a device's `applied` ack


@dataclass(frozen=True)
class Options:
    devices: int
    shard_size: int = 250
    grace_s: float = 30.0
    timeout_s: float | None = None
    load_seconds: float = 5.0
    load_clients: tuple[int, ...] = (50, 200)
    min_lead_s: float = 5.0
    flood_rate: int = 5000
    flood_seconds: float = 5.0

    @property
    def scenario_timeout(self) -> float:
        """Each wait gives up after this many seconds."""
        if self.timeout_s is not None:
            return self.timeout_s
        return 60.0 + 0.12 * self.devices


class Progress:
    """Prints `412/1000 armed` at most once a second, and when done."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total = label, total
        self._last: int | None = None
        self._printed = 0.0

    def __call__(self, done: int, extra: str = "") -> None:
        now = time.monotonic()
        if done == self._last and now - self._printed < 5:
            return
        if now - self._printed >= 1.0 or done >= self.total:
            print(f"    {done}/{self.total} {self.label}{extra}", flush=True)
            self._printed, self._last = now, done


def _whole_second(after: float) -> datetime:
    at = datetime.now(UTC) + timedelta(seconds=after)
    return at.replace(microsecond=0) + timedelta(seconds=1)


def _mono_of(instant: datetime) -> float:
    """The monotonic reading of a wall instant (near now)."""
    return time.monotonic() + (instant.timestamp() - time.time())


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1)]


class Rig:
    """Broker, controller, fleet, echo clients and observer of one run."""

    def __init__(self, opts: Options, workdir: Path, rows: list[dict[str, Any]]) -> None:
        self.opts = opts
        self.n = opts.devices
        self.workdir = workdir
        self.children = Children()
        self.rows = rows
        self.shards: list[Shard] = shards(self.n, opts.shard_size)
        self.device_ids = [d for s in self.shards for d in s.ids]
        self.broker: Mosquitto | None = None
        self.observer: AckObserver | None = None
        self.controller: subprocess.Popen[bytes] | None = None
        self.sims: list[subprocess.Popen[bytes]] = []
        self.http_port = 0
        self.token = ""
        self.db_path = workdir / "illuminate.sqlite"
        self.config = workdir / "illuminate.toml"
        self.connected: dict[int, int] = {}
        self.plan_bytes = 400
        self.unconfirmed_max = 0
        self.controller_rss: tuple[int, int] | None = None

    # ------------------------------------------------------------------ helpers

    def illuminate(self) -> list[str]:
        script = Path(sys.executable).parent / "illuminate"
        return [str(script)] if script.exists() else [sys.executable, "-m", "controller.cli"]

    def deadline(self) -> float:
        return time.monotonic() + self.opts.scenario_timeout

    def wait(
        self,
        count: Callable[[], int],
        total: int,
        label: str,
        deadline: float,
        interval: float = 0.05,
    ) -> bool:
        progress = Progress(label, total)
        while True:
            done = count()
            progress(done)
            if done >= total:
                return True
            if time.monotonic() >= deadline:
                print(f"    gave up waiting: {done}/{total} {label}", flush=True)
                return False
            self.children.check_alive()
            time.sleep(interval)

    def status(self) -> dict[str, Any]:
        code, _headers, body = httpload.get(HOST, self.http_port, STATUS_PATH)
        if code != 200:
            raise BenchAborted(f"{STATUS_PATH} answered {code}")
        data: dict[str, Any] = json.loads(body)
        return data

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)

    def applied_in_db(self, step: datetime) -> int:
        """Devices whose stored APPLIED report is of `step` (read-only)."""
        with self.db() as conn:
            values = conn.execute("SELECT applied_step_at FROM devices").fetchall()
        count = 0
        for (value,) in values:
            if value is None:
                continue
            at = datetime.fromisoformat(value)
            if (at if at.tzinfo else at.replace(tzinfo=UTC)) == step:
                count += 1
        return count

    def armed_after(self, baseline: dict[str, int]) -> dict[str, float]:
        """Device -> when its first `armed` ack above its baseline version was seen."""
        assert self.observer is not None
        seen = self.observer.poll()
        out = {}
        for device, acks in seen.armed.items():
            floor = baseline.get(device, 0)
            times = [at for version, at in acks if version > floor]
            if times:
                out[device] = min(times)
        return out

    def armed_versions(self) -> dict[str, int]:
        assert self.observer is not None
        seen = self.observer.poll()
        return {d: max(v for v, _ in acks) for d, acks in seen.armed.items() if acks}

    def put_campaign(self, body: dict[str, Any]) -> tuple[float, float]:
        """PUT the campaign; (monotonic when sent, monotonic when the answer came)."""
        sent = time.monotonic()
        code, answer = httpload.put_json(
            HOST, self.http_port, f"/api/v1/campaigns/{CAMPAIGN_ID}", body, self.token
        )
        returned = time.monotonic()
        if code not in (200, 201):
            raise BenchAborted(f"PUT campaign answered {code}: {answer[:300]!r}")
        return sent, returned

    # ------------------------------------------------------------------ set-up

    def start_broker(self) -> None:
        print(f"  broker: Mosquitto with {self.n} device accounts", flush=True)
        users = dict.fromkeys(self.device_ids, DEVICE_PASSWORD)
        self.broker = Mosquitto(self.workdir / "mosquitto", users=users).start()

    def register(self) -> None:
        print(f"  registration: {self.n} devices", flush=True)
        devices = one_per_site(self.device_ids, DEVICE_PASSWORD)
        seconds = register_fleet(f"sqlite:///{self.db_path}", catalog(self.n), devices)
        floor = registration_floor(self.n)
        self.rows.append(
            row(
                "registration",
                self.n,
                seconds,
                floor,
                per_device_ms=round(seconds / self.n * 1e3, 3),
                method="registry.add_devices, one batch",
            )
        )

    def write_config(self) -> None:
        assert self.broker is not None
        self.http_port = free_port()
        self.config.write_text(
            "\n".join(
                [
                    f'data_dir = "{self.workdir}"',
                    "[broker]",
                    f'url = "{self.broker.url}"',
                    f'username = "{CONTROLLER_USER}"',
                    f'password = "{CONTROLLER_PASSWORD}"',
                    "[database]",
                    f'url = "sqlite:///{self.db_path}"',
                    "[http]",
                    f'host = "{HOST}"',
                    f"port = {self.http_port}",
                    "[control]",
                    f"grace_s = {self.opts.grace_s}",
                    "",
                ]
            )
        )
        out = subprocess.run(
            [
                *self.illuminate(),
                "users",
                "add",
                "bench",
                "--role",
                "coordinator",
                "--config",
                str(self.config),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        found = re.search(r"API token: (\S+)", out.stdout)
        if out.returncode != 0 or not found:
            raise BenchAborted(f"could not create the API user: {out.stderr.strip()[-500:]}")
        self.token = found.group(1)

    def start_controller(self) -> float:
        """Start `illuminate serve`; seconds until its first HTTP answer."""
        print("  controller: illuminate serve", flush=True)
        start = time.monotonic()
        self.controller = self.children.start(
            "controller",
            [*self.illuminate(), "serve", "--config", str(self.config)],
            log=self.workdir / "controller.log",
        )
        return self._first_answer(start, self.http_port, "/healthz")

    def _first_answer(self, start: float, port: int, path: str) -> float:
        deadline = start + max(60.0, self.opts.scenario_timeout)
        while time.monotonic() < deadline:
            self.children.check_alive()
            try:
                code, _h, _b = httpload.get(HOST, port, path, timeout=2)
                if code == 200:
                    return time.monotonic() - start
            except OSError:
                pass
            time.sleep(0.01)
        raise BenchAborted(f"no HTTP answer on port {port} within the timeout")

    def start_observer(self) -> None:
        assert self.broker is not None
        self.observer = AckObserver(HOST, self.broker.port, CONTROLLER_USER, CONTROLLER_PASSWORD)
        self.observer.start()

    def start_echoes(self) -> None:
        assert self.broker is not None
        ready: set[int] = set()

        def on_line(line: str, index: int) -> None:
            if line == "ready":
                ready.add(index)

        for shard in self.shards:
            self.children.start(
                f"echo-{shard.index}",
                [
                    sys.executable,
                    "-m",
                    "bench.echo",
                    "--port",
                    str(self.broker.port),
                    "--username",
                    CONTROLLER_USER,
                    "--password",
                    CONTROLLER_PASSWORD,
                    "--shard",
                    str(shard.index),
                    "--count",
                    str(len(shard.ids)),
                ],
                log=self.workdir / f"echo-{shard.index}.log",
                on_line=functools.partial(lambda i, line: on_line(line, i), shard.index),
            )
        shards = len(self.shards)
        if not self.wait(lambda: len(ready), shards, "echo clients ready", self.deadline()):
            raise BenchAborted("the echo clients did not subscribe")

    def start_fleet(self) -> None:
        assert self.broker is not None
        print(f"  fleet: {len(self.shards)} simulator processes", flush=True)
        pattern = re.compile(r"connected (\d+)/(\d+)")
        for shard in self.shards:

            def on_line(line: str, i: int = shard.index) -> None:
                found = pattern.search(line)
                if found:
                    self.connected[i] = int(found.group(1))

            self.sims.append(
                self.children.start(
                    f"simulator-{shard.index}",
                    [
                        *self.illuminate(),
                        "simulate",
                        "--broker",
                        self.broker.url,
                        "--count",
                        str(len(shard.ids)),
                        "--prefix",
                        shard.prefix,
                        "--password",
                        DEVICE_PASSWORD,
                    ],
                    log=self.workdir / f"simulator-{shard.index}.log",
                    on_line=on_line,
                )
            )
        if not self.wait(
            lambda: sum(self.connected.values()), self.n, "devices connected", self.deadline()
        ):
            raise BenchAborted("the fleet did not connect")

    def floor(self, run: str, payload: int, retain: bool) -> float | None:
        ids = [d for s in self.shards for d in floor_ids(s.index, len(s.ids))]
        assert self.observer is not None
        progress = Progress(f"echoes ({run} floor)", len(ids))
        return echo_floor(
            self.observer,
            ids,
            run,
            payload,
            retain,
            CONTROLLER_USER,
            CONTROLLER_PASSWORD,
            self.deadline(),
            progress,
        )

    def stop(self) -> None:
        if self.observer is not None:
            try:
                self.observer.stop()
            except Exception as exc:
                print(f"  (observer stop: {exc})", file=sys.stderr)
        self.children.stop_all()
        if self.broker is not None:
            self.broker.stop()


# ---------------------------------------------------------------------- scenarios


def plan_fanout(rig: Rig) -> tuple[float | None, dict[str, int]]:
    """New campaign through the API: from the PUT's return until every device armed."""
    print("  plan-fanout: PUT a new campaign, wait for every `armed` ack", flush=True)
    opens = _whole_second(FIRST_WINDOW_IN.total_seconds())
    baseline = rig.armed_versions()
    sent, returned = rig.put_campaign(window_campaign(opens, WINDOW))
    done = rig.wait(lambda: len(rig.armed_after(baseline)), rig.n, "armed", rig.deadline())
    armed = rig.armed_after(baseline)
    last_armed = max(armed.values()) if done else None
    seconds = (last_armed - returned) if last_armed is not None else None
    with rig.db() as conn:
        got = conn.execute("SELECT payload FROM commands ORDER BY id DESC LIMIT 1").fetchone()
    if got:
        rig.plan_bytes = len(got[0].encode())
    print(f"  plan-fanout floor: {rig.n} retained QoS 1 plans of {rig.plan_bytes} bytes")
    floor = rig.floor("plan", rig.plan_bytes, retain=True)
    rig.rows.append(
        row(
            "plan-fanout",
            rig.n,
            seconds,
            floor,
            done=len(armed),
            timed_out=None if done else True,
            request_s=round(returned - sent, 4),
            from_request_s=None if last_armed is None else round(last_armed - sent, 4),
            ratio_from_request=(
                round((last_armed - sent) / floor, 2) if last_armed is not None and floor else None
            ),
            measured_from="the PUT's return",
            observed="armed acks at a privileged observer on the broker",
        )
    )
    return floor, rig.armed_versions()


def replan_and_step(rig: Rig, fanout_floor: float | None) -> None:
    """Replace the campaign with a window opening soon, then watch the opening."""
    opts = rig.opts
    last = rig.rows[-1]
    fanout = last.get("from_request_s") or opts.scenario_timeout
    lead = max(opts.min_lead_s, 2 * fanout + 3)
    opens = _whole_second(lead)
    print(f"  plan-fanout-replace: the window now opens in {lead:.0f}s", flush=True)
    baseline = rig.armed_versions()
    sent, returned = rig.put_campaign(window_campaign(opens, WINDOW))
    deadline = min(rig.deadline(), _mono_of(opens))
    done = rig.wait(lambda: len(rig.armed_after(baseline)), rig.n, "armed", deadline)
    armed = rig.armed_after(baseline)
    last_armed = max(armed.values()) if done else None
    rig.rows.append(
        row(
            "plan-fanout-replace",
            rig.n,
            (last_armed - returned) if last_armed is not None else None,
            fanout_floor,
            done=len(armed),
            timed_out=None if done else True,
            request_s=round(returned - sent, 4),
            from_request_s=None if last_armed is None else round(last_armed - sent, 4),
        )
    )
    new_versions = rig.armed_versions()
    step_confirm(rig, opens)
    sync_spread(rig, opens)
    footprint(rig)
    false_unconfirmed(rig, opens, new_versions, baseline)
    print(f"  step-confirm floor: {rig.n} QoS 1 messages of {APPLIED_ACK_BYTES} bytes")
    floor = rig.floor("step", APPLIED_ACK_BYTES, retain=False)
    for r in rig.rows:
        if r["scenario"] == "step-confirm":
            r.update(row("step-confirm", rig.n, r["seconds"], floor, **_extra(r)))
            if r["seconds"] is not None and floor:
                r["ratio_less_ttl"] = round((r["seconds"] - PUBLIC_TTL_S) / floor, 2)


def _extra(r: dict[str, Any]) -> dict[str, Any]:
    core = {"scenario", "devices", "seconds", "floor_seconds", "ratio"}
    return {k: v for k, v in r.items() if k not in core}


def step_confirm(rig: Rig, opens: datetime) -> None:
    print(f"  step-confirm: the window opens at {opens:%H:%M:%S}Z", flush=True)
    step = _mono_of(opens)
    while time.monotonic() < step:
        time.sleep(min(0.05, max(0.0, step - time.monotonic())))
    deadline = rig.deadline()
    # first the database (read-only), then the page: a stored APPLIED comes before
    # lit, and polling the page during the intake would add its load to the intake's
    db_at = lit_at = None
    lit = applied = 0
    progress = Progress("APPLIED stored", rig.n)
    while time.monotonic() < deadline:
        rig.children.check_alive()
        applied = rig.applied_in_db(opens)
        progress(applied)
        if applied >= rig.n:
            db_at = time.monotonic()
            break
        time.sleep(0.05)
    progress = Progress("lit on the public status", rig.n)
    while db_at is not None and time.monotonic() < deadline:
        rig.children.check_alive()
        summary = rig.status()["summary"]
        lit = int(summary["lit"])
        rig.unconfirmed_max = max(rig.unconfirmed_max, int(summary["unconfirmed"]))
        progress(lit)
        if lit >= rig.n:
            lit_at = time.monotonic()
            break
        time.sleep(0.05)
    done = lit_at is not None and db_at is not None
    rig.rows.append(
        row(
            "step-confirm",
            rig.n,
            (lit_at - step) if lit_at is not None else None,
            None,
            done=applied,
            lit=lit,
            timed_out=None if done else True,
            lit_s=None if lit_at is None else round(lit_at - step, 3),
            stored_s=None if db_at is None else round(db_at - step, 3),
            cache_ttl_s=PUBLIC_TTL_S,
        )
    )


def sync_spread(rig: Rig, opens: datetime) -> None:
    assert rig.observer is not None
    seen = rig.observer.poll()
    firsts = [next((a for a in acks if a.step_at == opens), None) for acks in seen.applied.values()]
    lateness = sorted((a.applied_at - a.step_at).total_seconds() for a in firsts if a is not None)
    values = {}
    if lateness:
        values = {
            "p50_ms": round(statistics.median(lateness) * 1e3, 2),
            "p99_ms": round(_percentile(lateness, 0.99) * 1e3, 2),
            "max_ms": round(lateness[-1] * 1e3, 2),
        }
    rig.rows.append(
        row(
            "sync-spread",
            rig.n,
            _percentile(lateness, 0.99) if lateness else None,
            None,
            samples=len(lateness),
            **values,
        )
    )


def footprint(rig: Rig) -> None:
    """Memory with every device online: the controller's (reported with status-load,
    beside the floor app) and the simulators', per device, also net of the memory of an
    idle interpreter that imported the simulator (the process floor)."""
    assert rig.controller is not None
    rig.controller_rss = rss_kib(rig.controller.pid)
    sims = sum(rss_kib(p.pid)[0] for p in rig.sims)
    ready: list[str] = []
    idle = rig.children.start(
        "idle-interpreter",
        [sys.executable, "-c", IDLE_SIMULATOR],
        log=rig.workdir / "idle.log",
        on_line=ready.append,
    )
    rig.wait(lambda: len(ready), 1, "idle interpreter ready", rig.deadline())
    base = rss_kib(idle.pid)[0]
    rig.children.stop(idle)
    marginal = (sims - base * len(rig.sims)) / rig.n
    rig.rows.append(
        row(
            "footprint-simulator",
            rig.n,
            None,
            None,
            kib_per_device=round(sims / rig.n, 1),
            marginal_kib_per_device=round(marginal, 1),
            rss_mib=round(sims / 1024, 1),
            processes=len(rig.sims),
            process_floor_mib=round(base / 1024, 1),
        )
    )


def false_unconfirmed(
    rig: Rig, opens: datetime, versions: dict[str, int], before: dict[str, int]
) -> None:
    """After the grace: commands marked unconfirmed although their device's `applied`
    ack reached the broker within the grace."""
    assert rig.observer is not None
    step = _mono_of(opens)
    until = step + rig.opts.grace_s + UNCONFIRMED_SETTLE_S
    print(f"  unconfirmed: waiting out the grace ({rig.opts.grace_s:.0f}s)", flush=True)
    while time.monotonic() < until:
        rig.children.check_alive()
        rig.unconfirmed_max = max(rig.unconfirmed_max, int(rig.status()["summary"]["unconfirmed"]))
        time.sleep(0.5)
    seen = rig.observer.poll()
    in_grace = {
        d
        for d, acks in seen.applied.items()
        if any(a.step_at == opens and a.seen <= step + rig.opts.grace_s for a in acks)
    }
    with rig.db() as conn:
        marked = conn.execute(
            "SELECT DISTINCT device_id, version FROM command_events WHERE to_state = 'unconfirmed'"
        ).fetchall()
    current = {(d, v) for d, v in marked if v > before.get(d, 0)}
    false = {d for d, _v in current if d in in_grace}
    summary = rig.status()["summary"]
    rig.rows.append(
        row(
            "false-unconfirmed",
            rig.n,
            None,
            None,
            false_unconfirmed=len(false),
            unconfirmed_commands=len(current),
            unconfirmed_sites_max=rig.unconfirmed_max,
            unconfirmed_sites_now=int(summary["unconfirmed"]),
            acked_within_grace=len(in_grace),
            grace_s=rig.opts.grace_s,
            metrics_unconfirmed=_metrics_unconfirmed(rig),
        )
    )


def _metrics_unconfirmed(rig: Rig) -> float | None:
    """The sum of /metrics samples whose name says `unconfirmed`, when there are any."""
    code, _h, body = httpload.get(HOST, rig.http_port, "/metrics")
    if code != 200:
        return None
    total, found = 0.0, False
    for line in body.decode().splitlines():
        if line.startswith("#") or "unconfirmed" not in line:
            continue
        try:
            total += float(line.rsplit(" ", 1)[1])
            found = True
        except (IndexError, ValueError):
            continue
    return total if found else None


def status_load(rig: Rig, startup_s: float) -> None:
    """The public status under 50 and 200 keep-alive clients, 200 and 304, beside a bare
    ASGI app under uvicorn serving the same bytes."""
    _code, headers, body = httpload.get(HOST, rig.http_port, STATUS_PATH)
    etag = headers.get("etag", '"none"')
    body_file = rig.workdir / "status.json"
    body_file.write_bytes(body)
    port = free_port()
    start = time.monotonic()
    floor = rig.children.start(
        "floor-app",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.floor_app:app",
            "--host",
            HOST,
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        log=rig.workdir / "floor-app.log",
        env={"BENCH_BODY_FILE": str(body_file), "BENCH_ETAG": etag},
    )
    floor_startup = rig._first_answer(start, port, "/")
    floor_rss = rss_kib(floor.pid)[0]
    assert rig.controller is not None
    rss, hwm = rig.controller_rss or rss_kib(rig.controller.pid)
    rig.rows.append(
        row("footprint-startup", rig.n, startup_s, floor_startup, to="first HTTP answer")
    )
    rig.rows.append(
        row(
            "footprint-rss",
            rig.n,
            None,
            None,
            rss_mib=round(rss / 1024, 1),
            hwm_mib=round(hwm / 1024, 1),
            floor_rss_mib=round(floor_rss / 1024, 1),
            rss_ratio=round(rss / floor_rss, 2) if floor_rss else None,
        )
    )
    print(f"  status-load: body {len(body)} bytes, ETag {etag}", flush=True)
    for clients in rig.opts.load_clients:
        for path in ("200", "304"):
            extra = {"If-None-Match": etag} if path == "304" else {}
            secs = rig.opts.load_seconds
            got = httpload.load(HOST, rig.http_port, STATUS_PATH, clients, secs, extra)
            base = httpload.load(HOST, port, STATUS_PATH, clients, secs, extra)
            print(
                f"    {clients} clients, {path}: {got.rps:.0f} req/s, p99 "
                f"{(got.p99_s or 0) * 1e3:.1f} ms (floor {base.rps:.0f} req/s, "
                f"p99 {(base.p99_s or 0) * 1e3:.1f} ms)",
                flush=True,
            )
            rig.rows.append(
                row(
                    "status-load",
                    rig.n,
                    got.p99_s,
                    base.p99_s,
                    clients=clients,
                    path=path,
                    rps=round(got.rps, 1),
                    floor_rps=round(base.rps, 1),
                    rps_share=round(got.rps / base.rps, 3) if base.rps else None,
                    p99_ms=None if got.p99_s is None else round(got.p99_s * 1e3, 2),
                    floor_p99_ms=None if base.p99_s is None else round(base.p99_s * 1e3, 2),
                    statuses=got.as_dict()["statuses"],
                    floor_statuses=base.as_dict()["statuses"],
                    errors=got.errors,
                    body_bytes=len(body),
                )
            )
    rig.children.stop(floor)


def flood_fairness(rig: Rig) -> None:
    """One device floods; another's reports are still stored promptly (bench/flood.py)."""
    if rig.n < 2 or rig.opts.flood_seconds <= 0:
        return
    assert rig.broker is not None
    flooder, probe = rig.device_ids[0], rig.device_ids[1]
    print(
        f"  flood: {flooder} sends {rig.opts.flood_rate} reports/s for "
        f"{rig.opts.flood_seconds:.0f}s; {probe} reports once a second",
        flush=True,
    )
    got = flood(
        HOST,
        rig.broker.port,
        rig.db_path,
        flooder,
        probe,
        DEVICE_PASSWORD,
        (CONTROLLER_USER, CONTROLLER_PASSWORD),
        rig.opts.flood_rate,
        rig.opts.flood_seconds,
    )
    worst = max(got.stored_s) if got.stored_s and not got.lost else None
    floor = max(got.seen_s) if got.seen_s else None
    rig.rows.append(
        row(
            "flood",
            rig.n,
            worst,
            floor,
            rate=round(got.rate),
            probes=len(got.stored_s) + got.lost,
            lost=got.lost,
            p50_ms=round(statistics.median(got.stored_s) * 1e3, 1) if got.stored_s else None,
        )
    )


def _newest_versions(rig: Rig) -> dict[str, int]:
    with rig.db() as conn:
        rows = conn.execute("SELECT device_id, MAX(version) FROM commands GROUP BY device_id")
        return {device: int(version) for device, version in rows}


def _applied_commands(rig: Rig) -> int:
    with rig.db() as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM commands WHERE state = 'applied'").fetchone()
    return int(count)


def broker_restart(rig: Rig) -> None:
    """The broker restarts with every device lit, without persistence: it forgets every
    session and retained plan. Until the fleet is connected again, the broker holds every
    device's newest plan again (the controller published them anew: a bare subscriber
    gets them all) and the page shows N lit; beside the fleet's own reconnection. No
    APPLIED command may be lost."""
    assert rig.broker is not None
    before = _applied_commands(rig)
    newest = _newest_versions(rig)
    print(f"  broker-restart: {before} commands APPLIED before", flush=True)
    rig.connected = dict.fromkeys(rig.connected, 0)
    start = time.monotonic()
    rig.broker.restart()
    watch = PlanWatch(HOST, rig.broker.port, CONTROLLER_USER, CONTROLLER_PASSWORD, newest)
    watch.start(timeout=30)
    deadline = rig.deadline()
    fleet_at = plans_at = back_at = None
    lit = 0
    progress = Progress("plans held by the broker again", rig.n)
    try:
        while time.monotonic() < deadline:
            if fleet_at is None and sum(rig.connected.values()) >= rig.n:
                fleet_at = time.monotonic()
            held = watch.count()
            progress(held)
            if plans_at is None and held >= rig.n:
                plans_at = time.monotonic()
            if plans_at is not None and fleet_at is not None:
                lit = int(rig.status()["summary"]["lit"])
                if lit >= rig.n:
                    back_at = time.monotonic()
                    break
            rig.children.check_alive()
            time.sleep(0.2)
    finally:
        watch.stop()
    after = _applied_commands(rig)
    rig.rows.append(
        row(
            "broker-restart",
            rig.n,
            None if back_at is None else back_at - start,
            None if fleet_at is None else fleet_at - start,
            plans_s=None if plans_at is None else round(plans_at - start, 3),
            plans=watch.count(),
            lit=lit,
            applied_before=before,
            applied_after=after,
            lost=max(0, before - after),
            timed_out=back_at is None,
        )
    )


def run(opts: Options, workdir: Path, rows: list[dict[str, Any]]) -> None:
    """Every end-to-end scenario in order, appending to `rows` (kept if one fails).
    Every child process is stopped on the way out, whatever happens."""
    rig = Rig(opts, workdir, rows)
    try:
        rig.start_broker()
        rig.register()
        rig.write_config()
        startup = rig.start_controller()
        rig.start_observer()
        rig.start_echoes()
        rig.start_fleet()
        floor, _versions = plan_fanout(rig)
        replan_and_step(rig, floor)
        status_load(rig, startup)
        flood_fairness(rig)
        broker_restart(rig)
    finally:
        rig.stop()
