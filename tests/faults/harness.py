"""The fault-injection harness: a campaign over a fleet, real processes, real Mosquitto.

A `Rig` runs a private Mosquitto (tests/support/mosquitto.py), `illuminate serve` in a
subprocess, and the fleet as `illuminate simulate` shards, each writing an applied log
(`--applied-log`); the processes are started and stopped by the bench's `Children`.
A privileged `Observer` on the broker sees every ack and status. A scenario breaks
something, lets it heal, and calls `Rig.verify`, which waits (with a generous deadline)
until the three promises hold, or fails saying which device breaks which:

1. every device's last applied step is the desired state now and the public page shows
   its site as such (`lit` in a window, `off` outside); or the page shows it
   `unconfirmed` or `offline` and the database says why (the devices made silent on
   purpose must be shown so: never `lit`);
2. no device applied a version twice (the same step of the same plan, within one life
   of its memory) or a stale one (below a version it had applied), and every step it
   applied is in the plan the controller stored under that version;
3. no version beyond the expected ones was issued: a window that did not change got
   no new version, whatever broke (but for the controller's bounded retries of the same
   plan to a device that never confirms).

Counts scale with ILLUMINATE_FAULT_SCALE (1 = the full counts of `make faults`: 200
devices, 1,000 for the mass reconnect, a 45 s database lock; `make test` runs 0.2).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
from sqlalchemy import Engine, text

from bench import httpload
from bench.mqtt import client as mqtt_client
from bench.mqtt import connect as mqtt_connect
from bench.procs import Children
from controller.reconcile import MAX_RETRIES, same_from_now
from controller.registration import hash_generated_secret
from controller.store.base import NewDevice, Stores
from controller.store.db import make_engine, session_factory
from controller.store.sql import database, sql_stores
from controller.store.users import Users
from devices.appliedlog import AppliedStep, read_applied
from devices.protocol import Plan, decode
from devices.simulator import FleetSpec
from schedules.model import Campaign, SiteCatalog
from tests.support.mosquitto import CONTROLLER_PASSWORD, CONTROLLER_USER, Mosquitto, free_port

HOST = "127.0.0.1"
ROOT = "illuminate/v1"
ZONE = "Europe/Brussels"
CAMPAIGN_ID = "faults-blue"
BLUE, RED, GREEN, AMBER = "#009EDB", "#D0021B", "#2E7D32", "#FFB300"
LEVEL = 80
DEVICE_PASSWORD = "faults-device-pw"
GRACE_S = 3.0
DEADLINE_S = 120.0
"""How long a wait may take before the scenario fails: generous, never a speed bound."""


def scale() -> float:
    raw = os.environ.get("ILLUMINATE_FAULT_SCALE", "0.2")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"ILLUMINATE_FAULT_SCALE={raw!r} is not a number") from None
    if not 0 < value <= 10:
        raise ValueError("ILLUMINATE_FAULT_SCALE must be above 0 and at most 10")
    return value


def count(full: int, floor: int = 20) -> int:
    """`full` at scale 1, never below `floor`."""
    return max(floor, round(full * scale()))


def seconds(full: float, floor: float) -> float:
    return max(floor, full * scale())


def deadline_s() -> float:
    return DEADLINE_S * max(1.0, scale())


def whole_second(after_s: float) -> datetime:
    return (datetime.now(UTC) + timedelta(seconds=after_s)).replace(microsecond=0) + timedelta(
        seconds=1
    )


def wait_until(
    what: str,
    predicate: Callable[[], bool],
    timeout: float | None = None,
    explain: Callable[[], object] | None = None,
    step: float = 0.1,
) -> None:
    """Poll `predicate` until it holds; fail naming `what` (and `explain()`) past the deadline."""
    limit = time.monotonic() + (timeout if timeout is not None else deadline_s())
    while not predicate():
        if time.monotonic() > limit:
            detail = f": {explain()}" if explain is not None else ""
            raise AssertionError(f"not reached within the deadline: {what}{detail}")
        time.sleep(step)


# ---------------------------------------------------------------------- the campaign


@dataclass(frozen=True)
class Window:
    opens: datetime
    closes: datetime


def campaign_body(windows: list[Window], color: str = BLUE) -> dict[str, Any]:
    """One campaign, every site, the given windows (each under a day), as API JSON."""
    zone = ZoneInfo(ZONE)
    out = []
    for w in windows:
        start, end = w.opens.astimezone(zone), w.closes.astimezone(zone)
        out.append(
            {
                "targets": {"all": True},
                "dates": [start.date().isoformat()],
                "start": {"at": start.strftime("%H:%M:%S")},
                "end": {"at": end.strftime("%H:%M:%S")},
            }
        )
    return {
        "id": CAMPAIGN_ID,
        "title": {"en": "Fault injection"},
        "color": color,
        "level": LEVEL,
        "windows": out,
    }


@dataclass
class Desired:
    """What every device must show at a time: the windows of the campaign as it is now."""

    windows: list[Window]
    color: str = BLUE

    def at(self, t: datetime) -> tuple[bool, str | None]:
        lit = any(w.opens <= t < w.closes for w in self.windows)
        return (True, self.color) if lit else (False, None)


def site_id(i: int) -> str:
    return f"site-{i:05d}"


def catalog(n: int) -> SiteCatalog:
    return SiteCatalog.model_validate(
        {
            "cities": [{"id": "city", "name": {"en": "City"}, "timezone": ZONE}],
            "sites": [
                {
                    "id": site_id(i),
                    "city": "city",
                    "name": {"en": f"Monument {i}"},
                    "lat": 50.5 + (i % 100) / 200,
                    "lon": 3.5 + (i // 100 % 100) / 50,
                }
                for i in range(n)
            ],
        }
    )


# ---------------------------------------------------------------------- the observer


class Observer:
    """A privileged client (the controller's account) that sees every ack and status.

    `on_ack` callbacks run on paho's thread as each ack arrives: a scenario that must
    strike mid fan-out kills from there, within a millisecond of the ack it waits for.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self._lock = threading.Lock()
        self.acks: dict[str, list[tuple[int, str, float]]] = defaultdict(list)
        self.online: dict[str, bool] = {}
        self.births: dict[str, list[float]] = defaultdict(list)
        self.on_ack: list[Callable[[str, int, str], None]] = []
        self._subscribed = threading.Event()
        self.client = mqtt_client(f"faults-observer-{time.monotonic_ns()}", *_controller())
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1)

    def start(self) -> Observer:
        mqtt_connect(self.client, HOST, self.port, timeout=30)
        if not self._subscribed.wait(30):
            raise AssertionError("the observer's subscription was not acknowledged")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, c: mqtt.Client, *_args: Any) -> None:
        c.subscribe([(f"{ROOT}/devices/+/ack", 0), (f"{ROOT}/devices/+/status", 0)])

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        at = time.monotonic()
        parts = msg.topic.split("/")
        device, kind = parts[-2], parts[-1]
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        if not isinstance(body, dict):
            return
        if kind == "status":
            online = bool(body.get("online"))
            with self._lock:
                self.online[device] = online
                if online and not msg.retain:
                    self.births[device].append(at)
            return
        try:
            version, stage = int(body["version"]), str(body["stage"])
        except (KeyError, TypeError, ValueError):
            return
        with self._lock:
            self.acks[device].append((version, stage, at))
            hooks = list(self.on_ack)
        for hook in hooks:
            hook(device, version, stage)

    def forget_online(self) -> None:
        with self._lock:
            self.online.clear()

    def devices_with(self, stage: str, version: int) -> set[str]:
        with self._lock:
            return {
                d for d, acks in self.acks.items() if any(a[:2] == (version, stage) for a in acks)
            }

    def online_count(self, ids: list[str]) -> int:
        with self._lock:
            return sum(1 for d in ids if self.online.get(d))


def _controller() -> tuple[str, str]:
    return CONTROLLER_USER, CONTROLLER_PASSWORD


# ---------------------------------------------------------------------- the rig


@dataclass
class Shard:
    """One `illuminate simulate` process; `runs` are its applied logs, one per start,
    each with whether the devices kept their memory from the run before."""

    index: int
    ids: list[str]
    silent: int = 0
    state_dir: Path | None = None
    keepalive_s: int = 30
    runs: list[tuple[Path, bool]] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def prefix(self) -> str:
        return f"f{self.index:02d}-"

    @property
    def silent_ids(self) -> list[str]:
        return self.ids[: self.silent]


class Rig:
    """Broker, controller and fleet of one scenario, on one campaign."""

    def __init__(
        self,
        workdir: Path,
        devices: int,
        *,
        shards: int = 1,
        silent: int = 2,
        database_url: str | None = None,
        persistence: bool = False,
        keepalive_s: int = 30,
        state: bool = False,
        grace_s: float = GRACE_S,
    ) -> None:
        self.workdir = workdir
        self.children = Children()
        self.broker = Mosquitto(workdir / "mosquitto", persistence=persistence)
        self.db_url = database_url or f"sqlite:///{workdir / 'illuminate.sqlite'}"
        self.grace_s = grace_s
        self.http_port = free_port()
        self.config = workdir / "illuminate.toml"
        self.controller: subprocess.Popen[bytes] | None = None
        self.controller_env: dict[str, str] = {}
        self.token = ""
        self.desired = Desired([])
        self.observer: Observer | None = None
        self.device_port: int | None = None  # where devices connect (a proxy), else the broker
        self._db: Engine | None = None
        size = -(-devices // shards)
        self.shards: list[Shard] = []
        left = devices
        for index in range(shards):
            n = min(size, left)
            left -= n
            spec = FleetSpec.generate(n, DEVICE_PASSWORD, f"f{index:02d}-")
            shard = Shard(
                index,
                [d.id for d in spec.devices],
                silent=silent if index == 0 else 0,
                state_dir=(workdir / f"state-{index}") if state else None,
                keepalive_s=keepalive_s,
            )
            self.shards.append(shard)
        self.ids = [d for s in self.shards for d in s.ids]
        self.silent_ids = {d for s in self.shards for d in s.silent_ids}
        self.site_of = {d: site_id(i) for i, d in enumerate(self.ids)}

    # ------------------------------------------------------------------ set-up

    def illuminate(self) -> list[str]:
        script = Path(sys.executable).parent / "illuminate"
        return [str(script)] if script.exists() else [sys.executable, "-m", "controller.cli"]

    def start_broker(self) -> None:
        self.broker.users.update(dict.fromkeys(self.ids, DEVICE_PASSWORD))
        self.broker.start()
        self.observer = Observer(self.broker.port).start()

    def setup(self, windows: list[Window], color: str = BLUE) -> None:
        """Sites, devices, a coordinator and the campaign, straight into the database
        (as `illuminate sites import`, `devices import`, `users add` would)."""
        now = datetime.now(UTC)
        with database(self.db_url) as (_engine, sessions, stores):
            stores.registry.import_catalog(catalog(len(self.ids)))
            stores.registry.add_devices(
                [
                    NewDevice(d, self.site_of[d], hash_generated_secret(DEVICE_PASSWORD))
                    for d in self.ids
                ],
                now,
            )
            if windows:
                stores.campaigns.put(Campaign.model_validate(campaign_body(windows, color)), now)
            self.token = Users(sessions).add("faults", "coordinator", [], now)
        self.desired = Desired(list(windows), color)
        self.config.write_text(
            "\n".join(
                [
                    f'data_dir = "{self.workdir}"',
                    "[broker]",
                    f'url = "{self.broker.url}"',
                    f'username = "{CONTROLLER_USER}"',
                    f'password = "{CONTROLLER_PASSWORD}"',
                    "[database]",
                    f'url = "{self.db_url}"',
                    "[http]",
                    f'host = "{HOST}"',
                    f"port = {self.http_port}",
                    "[control]",
                    f"grace_s = {self.grace_s}",
                    "tick_s = 1",
                    "publish_timeout_s = 5",
                    "",
                ]
            )
        )

    def start(self, windows: list[Window], color: str = BLUE) -> None:
        """Broker, database, controller and fleet; returns once every device is online."""
        self.start_broker()
        self.setup(windows, color)
        self.start_controller(wait=False)  # the processes start side by side
        for shard in self.shards:
            self.start_shard(shard)
        self.wait_healthy()
        self.wait_online()

    def start_controller(self, *, wait: bool = True) -> None:
        self.controller = self.children.start(
            "controller",
            [*self.illuminate(), "serve", "--config", str(self.config)],
            log=self.workdir / "controller.log",
            env=self.controller_env,
        )
        if wait:
            self.wait_healthy()

    def wait_healthy(self) -> None:
        wait_until("the controller answers /healthz", lambda: self._get("/healthz")[0] == 200)

    def kill_controller(self) -> None:
        """SIGKILL: nothing of the controller's runs on."""
        assert self.controller is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.controller.pid, signal.SIGKILL)
        self.controller.wait(timeout=30)
        self.controller = None

    def stop_controller(self) -> None:
        assert self.controller is not None
        self.children.stop(self.controller, timeout=30)
        self.controller = None

    def start_shard(self, shard: Shard, *, kept_memory: bool = True) -> None:
        log = self.workdir / f"applied-{shard.index}-{len(shard.runs)}.jsonl"
        shard.runs.append((log, kept_memory))
        port = self.device_port or self.broker.port
        argv = [
            *self.illuminate(),
            "simulate",
            "--broker",
            f"mqtt://{HOST}:{port}",
            "--count",
            str(len(shard.ids)),
            "--prefix",
            shard.prefix,
            "--password",
            DEVICE_PASSWORD,
            "--silent",
            str(shard.silent),
            "--applied-log",
            str(log),
            "--keepalive",
            str(shard.keepalive_s),
        ]
        if shard.state_dir is not None:
            argv += ["--state-dir", str(shard.state_dir)]
        shard.proc = self.children.start(
            f"simulator-{shard.index}", argv, log=self.workdir / f"simulator-{shard.index}.log"
        )

    def kill_shard(self, shard: Shard, *, forget: bool = False) -> None:
        """Power the shard's devices off (SIGKILL); `forget` also wipes what they stored."""
        assert shard.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(shard.proc.pid, signal.SIGKILL)
        shard.proc.wait(timeout=30)
        shard.proc = None
        if forget and shard.state_dir is not None:
            shutil.rmtree(shard.state_dir, ignore_errors=True)

    def kill_broker(self) -> None:
        """SIGKILL the broker; what the observer knew of who is online goes with it."""
        self.broker.kill()
        assert self.observer is not None
        self.observer.forget_online()

    def restart_broker(self) -> None:
        """Start the killed broker again, on its port, with what it persisted (if anything)."""
        self.broker.start(write_passwords=False)

    def wait_online(self, ids: list[str] | None = None) -> None:
        ids = ids or self.ids
        obs = self.observer
        assert obs is not None
        wait_until(
            f"{len(ids)} devices online",
            lambda: obs.online_count(ids) == len(ids),
            explain=lambda: f"{obs.online_count(ids)} online",
        )

    def stop(self) -> None:
        if self.observer is not None:
            with contextlib.suppress(Exception):
                self.observer.stop()
        self.children.stop_all()
        self.broker.stop()
        if self._db is not None:
            self._db.dispose()

    # ------------------------------------------------------------------ acting

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            code, _headers, body = httpload.get(HOST, self.http_port, path, timeout=5)
        except OSError:
            return 0, b""
        return code, body

    def readyz(self) -> int:
        return self._get("/readyz")[0]

    def put_campaign(self, windows: list[Window], color: str) -> None:
        code, answer = httpload.put_json(
            HOST,
            self.http_port,
            f"/api/v1/campaigns/{CAMPAIGN_ID}",
            campaign_body(windows, color),
            self.token,
        )
        assert code in (200, 201), (code, answer[:300])
        self.desired = Desired(list(windows), color)

    def page(self) -> dict[str, str]:
        code, body = self._get("/api/v1/public/status")
        if code != 200:
            return {}
        return {s["id"]: s["state"] for s in json.loads(body)["sites"]}

    def wait_acked(self, stage: str, version: int, ids: list[str] | None = None) -> None:
        obs = self.observer
        assert obs is not None
        want = set(ids or self.ids) - self.silent_ids
        wait_until(
            f"{len(want)} devices acked {stage} of version {version}",
            lambda: want <= obs.devices_with(stage, version),
            explain=lambda: f"missing {sorted(want - obs.devices_with(stage, version))[:5]}",
        )

    def metric(self, name: str) -> float:
        """One metric's value, summed over its labels. A reply that does not come within
        the HTTP timeout (a busy machine) is asked again, up to the deadline."""
        answer: list[bytes] = []

        def answered() -> bool:
            code, body = self._get("/metrics")
            if code == 200:
                answer.append(body)
            return bool(answer)

        wait_until("the controller answers /metrics", answered, step=0.5)
        body = answer[0]
        total = 0.0
        for line in body.decode().splitlines():
            if "{" in name:  # one labelled sample, named in full
                if line.startswith(name + " "):
                    total += float(line.rsplit(" ", 1)[1])
            elif line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    # ------------------------------------------------------------------ checking

    def _engine(self) -> Engine:
        """The rig's own read connection to the controller's database (never migrates)."""
        if self._db is None:
            self._db = make_engine(self.db_url)
        return self._db

    def stores(self) -> Stores:
        return sql_stores(session_factory(self._engine()))

    def applied(self) -> dict[str, list[tuple[int, AppliedStep]]]:
        """Per device, every step it applied in order, each with the life it belongs to
        (a new life begins when a device restarts without its memory)."""
        out: dict[str, list[tuple[int, AppliedStep]]] = defaultdict(list)
        for shard in self.shards:
            life = 0
            for log, kept in shard.runs:
                if not kept:
                    life += 1
                if log.exists():
                    for step in read_applied(log):
                        out[step.device].append((life, step))
        return out

    def problems(self, versions: dict[str, int] | int) -> list[str]:
        """Every way the three promises are broken now (empty: they hold)."""
        expected = versions if isinstance(versions, dict) else dict.fromkeys(self.ids, versions)
        now = datetime.now(UTC)
        on, color = self.desired.at(now)
        page = self.page()
        if not page:
            return ["the public status does not answer"]
        stores = self.stores()
        views = stores.reports.views()
        latest = stores.outbox.latest()
        commands: dict[str, dict[int, Plan]] = defaultdict(dict)
        with self._engine().connect() as conn:
            for device, version, payload in conn.execute(
                text("SELECT device_id, version, payload FROM commands")
            ):
                commands[device][int(version)] = decode(Plan, payload)
        applied = self.applied()
        out: list[str] = []
        for d in self.ids:
            steps = applied.get(d, [])
            shown = page.get(self.site_of[d])
            # 1. the desired state, or honestly shown as not confirmed, with the reason
            last = steps[-1][1].state if steps else None
            right = last is not None and last.on == on and (not on or last.color == color)
            if not on and last is None:
                right = True  # never lit, and must not be
            expected_page = "lit" if on else "off"
            if d in self.silent_ids and on:
                if shown not in ("unconfirmed", "offline"):
                    out.append(f"{d}: says nothing, yet its site is shown {shown!r}")
                elif self._reason(d, views, latest) is None:
                    out.append(f"{d}: shown {shown!r} with no reason stored")
            elif not (right and shown == expected_page):
                out.append(
                    f"{d}: shows {last!r} and its site is {shown!r}; desired on={on} {color}"
                )
            # 2. no version applied twice, none stale, each as the controller planned it
            seen: set[tuple[int, int, datetime]] = set()
            top = 0
            for life, step in steps:
                key = (life, step.version, step.step_at)
                if key in seen:
                    out.append(f"{d}: applied version {step.version} step {step.step_at} twice")
                seen.add(key)
                if step.version < top:
                    out.append(f"{d}: applied stale version {step.version} after {top}")
                top = max(top, step.version)
                command = commands[d].get(step.version)
                if command is None:
                    out.append(f"{d}: applied version {step.version}, which was never issued")
                    continue
                planned = [s for s in command.steps if s.at == step.step_at]
                if not planned or planned[0].state.on != step.state.on:
                    out.append(f"{d}: applied a step version {step.version} does not hold")
            # 3. no version beyond the expected ones; a device that never confirms may
            # get its unchanged plan again, under a new version, a few times (a retry)
            issued = sorted(commands[d])
            want = list(range(1, expected[d] + 1))
            if d in self.silent_ids and issued[: len(want)] == want:
                retries = issued[len(want) :]
                if len(retries) > MAX_RETRIES * (2 * len(self.desired.windows) + 1):
                    out.append(f"{d}: {len(retries)} retries")
                for v in retries:
                    plan, before = commands[d][v], commands[d][v - 1]
                    if not same_from_now(before.steps, plan.steps, plan.issued_at):
                        out.append(f"{d}: version {v} is not a retry of {v - 1}")
            elif issued != want:
                out.append(f"{d}: versions issued {issued}, expected 1..{expected[d]}")
        return out

    @staticmethod
    def _reason(d: str, views: dict[str, Any], latest: dict[str, Any]) -> str | None:
        view = views.get(d)
        if view is not None and view.online is False:
            return f"offline since {view.status_at}"
        command = latest.get(d)
        if command is not None and command.state.value in (
            "unconfirmed",
            "failed",
            "rejected",
            "expired",
        ):
            return f"version {command.version} {command.state.value}: {command.reason or ''}"
        return None

    def verify(self, versions: dict[str, int] | int, timeout: float | None = None) -> None:
        """Wait until the three promises hold for every device; fail with what breaks them."""
        found: list[list[str]] = [[]]

        def holds() -> bool:
            found[0] = self.problems(versions)
            return not found[0]

        wait_until(
            "every device in its desired state (or honestly not confirmed), no stale or "
            "duplicate application, no needless version",
            holds,
            timeout,
            explain=lambda: f"{len(found[0])} problem(s), first: {found[0][:8]}",
            step=0.5,
        )


@contextlib.contextmanager
def rig(workdir: Path, devices: int, **options: Any) -> Iterator[Rig]:
    made = Rig(workdir, devices, **options)
    try:
        yield made
    finally:
        made.stop()
