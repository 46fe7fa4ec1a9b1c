"""Test flashes: a short plan marked as a test, and how long the device took to apply it.

A technician asks a device to flash; the controller commits a *test plan* to the outbox
as the device's next version (so the device, which ignores any version at or below the
one it holds, takes it), wakes the dispatcher, and waits for the device's report:

- the plan's first step, at the request's instant, is the flash (white at 100% unless
  asked otherwise); its second, `seconds` later, is the state the device's real plan has
  then, followed by the real plan's later steps. So a device that never hears from the
  controller again still goes back to its schedule by itself;
- `not_after` is the end of the flash: a device that receives the plan later acks
  `expired` and does not flash;
- the answer is `applied` with the round trip on the monotonic clock (from just before
  the plan is committed to the moment the controller has stored the device's apply
  report), or `timeout` when no report came within `seconds`, or what the device said
  instead (`rejected`, `failed`, `expired`);
- the reconciler leaves a test plan alone until its `not_after` (controller/reconcile.py)
  and then issues the real plan again as a new version: the device ends the test back
  on its real plan, above the test's version;
- the public view never counts a test plan as confirming a window (controller/public.py).

Tests are rate-limited per device and per user (`FlashLimits`), on the monotonic clock.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from controller.lifecycle import FINAL, CommandState
from controller.store.base import Command, NewVersion, Stores
from devices.clock import Clock
from devices.protocol import MAX_STEPS, OFF, LightState, Plan, PlanStep, encode

DEFAULT_SECONDS = 10.0
MIN_SECONDS = 1.0
MAX_SECONDS = 30.0
FLASH = LightState(on=True, color="#FFFFFF", level=100)
POLL_S = 0.5
"""The longest a waiting test sleeps without looking at the store (it is woken at once
when the intake stores a report of the device)."""
ATTEMPTS = 5
"""Times a test plan is tried against a newest command that moved meanwhile."""
SETTLE = timedelta(seconds=1)
"""How long after a test's end the reconciler sends the real plan again."""


class FlashResult(StrEnum):
    APPLIED = "applied"
    TIMEOUT = "timeout"
    REJECTED = "rejected"
    FAILED = "failed"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"


class RateLimited(Exception):
    """Too many tests: of this device, or by this user. `retry_after_s` says when one
    more would be allowed."""

    def __init__(self, scope: str, retry_after_s: float, message: str) -> None:
        super().__init__(message)
        self.scope = scope
        self.retry_after_s = retry_after_s
        self.message = message

    @property
    def retry_after(self) -> int:
        """Whole seconds, for the Retry-After header (at least 1)."""
        return max(1, math.ceil(self.retry_after_s - 1e-9))


class TestRunning(Exception):
    """The device's newest plan is a test that is not over yet."""

    __test__ = False  # not a pytest class


@dataclass(frozen=True)
class FlashLimits:
    """One test per device every `device_interval_s`; at most `user_tests` tests by one
    user in any `user_window_s`."""

    device_interval_s: float = 30.0
    user_tests: int = 10
    user_window_s: float = 60.0


class FlashLimiter:
    """The rate rules, on a monotonic clock. `take` checks and counts in one step, so
    two requests at once cannot both pass."""

    def __init__(self, limits: FlashLimits, monotonic: Callable[[], float]) -> None:
        self.limits = limits
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._device: dict[str, float] = {}
        self._user: dict[str, deque[float]] = {}

    def check(self, device_id: str, user: str) -> None:
        """Raise RateLimited if one more test would be refused (counts nothing)."""
        with self._lock:
            self._check(device_id, user, self.monotonic())

    def take(self, device_id: str, user: str) -> None:
        """Count one test of `device_id` by `user`, or raise RateLimited."""
        with self._lock:
            now = self.monotonic()
            self._check(device_id, user, now)
            self._device[device_id] = now
            self._user[user].append(now)
            self._forget(now)

    def _check(self, device_id: str, user: str, now: float) -> None:
        limits = self.limits
        last = self._device.get(device_id)
        if last is not None and now - last < limits.device_interval_s:
            wait = last + limits.device_interval_s - now
            raise RateLimited(
                "device",
                wait,
                f"device {device_id!r} was tested less than "
                f"{limits.device_interval_s:g} s ago; try again in {math.ceil(wait)} s",
            )
        mine = self._user.setdefault(user, deque())
        while mine and now - mine[0] >= limits.user_window_s:
            mine.popleft()
        if len(mine) >= limits.user_tests:
            wait = mine[0] + limits.user_window_s - now
            raise RateLimited(
                "user",
                wait,
                f"{user} ran {limits.user_tests} tests in the last "
                f"{limits.user_window_s:g} s; try again in {math.ceil(wait)} s",
            )

    def _forget(self, now: float) -> None:
        """Drop what no longer limits anything, so the tables stay small."""
        if len(self._device) > 1000:
            self._device = {
                d: t for d, t in self._device.items() if now - t < self.limits.device_interval_s
            }
        if len(self._user) > 1000:
            for user in [u for u, q in self._user.items() if not q]:
                del self._user[user]


def flash_plan(
    version: int,
    now: datetime,
    seconds: float,
    light: LightState,
    real: Plan | None,
) -> Plan:
    """The test plan: `light` from `now` for `seconds`, then what `real` (the device's
    real plan, if it has one) shows from then on; off when it has none."""
    end = now + timedelta(seconds=seconds)
    back = real.step_at(end) if real is not None else None
    steps = [
        PlanStep(at=now, state=light),
        PlanStep(at=end, state=back.state if back is not None else OFF),
    ]
    if real is not None:
        steps.extend(s for s in real.steps if s.at > end)
    return Plan(version=version, issued_at=now, not_after=end, steps=steps[:MAX_STEPS], test=True)


def flash_held(command: Command | None, now: datetime) -> datetime | None:
    """Until when the reconciler leaves this newest command alone: a test plan that is
    not final is held until `SETTLE` after its end (so the answer, due at the end, is
    given on the test's own outcome); None when it is not held (any more)."""
    if command is None or command.state in FINAL:
        return None
    try:
        plan = command.plan
    except ValueError:
        return None
    if not plan.test or plan.not_after is None:
        return None
    until = plan.not_after + SETTLE
    return until if now < until else None


def flash_running(command: Command | None, now: datetime) -> bool:
    """Is this newest command a test plan that is not over yet (before its not_after,
    and not final)? The reconciler leaves such a plan alone."""
    if command is None or command.state in FINAL:
        return False
    try:
        plan = command.plan
    except ValueError:
        return False
    return plan.test and plan.not_after is not None and now < plan.not_after


@dataclass(frozen=True)
class Flash:
    """One test under way: its command, and its start and deadline (monotonic)."""

    device_id: str
    command_id: int
    version: int
    issued_at: datetime
    back_at: datetime
    """When the plan puts the device back on its real plan's state."""
    started: float
    deadline: float

    def verdict(self, command: Command | None, mono: float) -> Outcome | None:
        """The outcome, when there is one yet: the command's state at monotonic `mono`."""
        state = command.state if command is not None else None
        if state is CommandState.APPLIED:
            return Outcome(self, FlashResult.APPLIED, state, mono - self.started)
        if state in FINAL:
            assert command is not None and state is not None
            return Outcome(self, FlashResult(state.value), state, None, command.reason)
        if mono >= self.deadline:
            return Outcome(self, FlashResult.TIMEOUT, state, None)
        return None


@dataclass(frozen=True)
class Outcome:
    flash: Flash
    result: FlashResult
    stage: CommandState | None
    """The test command's state when the answer was given."""
    round_trip_s: float | None = None
    reason: str | None = None


class FlashTester:
    """Starts test flashes and waits for their outcome. `wake` tells the dispatcher that
    the outbox has a new row; `notify(devices)` (the intake stored reports of these
    devices) wakes the waiting tests."""

    def __init__(
        self,
        stores: Stores,
        clock: Clock,
        monotonic: Callable[[], float],
        *,
        limits: FlashLimits | None = None,
        wake: Callable[[], None] = lambda: None,
        poll_s: float = POLL_S,
    ) -> None:
        self.stores = stores
        self.clock = clock
        self.monotonic = monotonic
        self.limiter = FlashLimiter(limits or FlashLimits(), monotonic)
        self.wake = wake
        self.poll_s = poll_s
        self._cond = threading.Condition()

    def start(
        self, device_id: str, user: str, seconds: float = DEFAULT_SECONDS, light: LightState = FLASH
    ) -> Flash:
        """Commit the test plan, or raise RateLimited or TestRunning."""
        if not MIN_SECONDS <= seconds <= MAX_SECONDS:
            raise ValueError(f"seconds must be from {MIN_SECONDS:g} to {MAX_SECONDS:g}")
        outbox = self.stores.outbox
        self.limiter.check(device_id, user)
        latest = outbox.latest([device_id]).get(device_id)
        if flash_running(latest, self.clock()):
            raise TestRunning(f"device {device_id!r} is already running a test")
        self.limiter.take(device_id, user)
        for attempt in range(ATTEMPTS):
            if attempt:
                latest = outbox.latest([device_id]).get(device_id)
            now = self.clock()
            if flash_running(latest, now):
                raise TestRunning(f"device {device_id!r} is already running a test")
            view = self.stores.reports.views([device_id]).get(device_id)
            floor = view.version_floor if view is not None else 0
            version = max(latest.version if latest is not None else 0, floor) + 1
            plan = flash_plan(version, now, seconds, light, _real_plan(latest))
            started = self.monotonic()
            stored = outbox.add_versions(
                [
                    NewVersion(
                        device_id,
                        version,
                        encode(plan).decode(),
                        now,
                        (latest.id, latest.state) if latest is not None else None,
                    )
                ]
            )
            if stored:
                self.wake()
                return Flash(
                    device_id,
                    stored[0].id,
                    version,
                    now,
                    plan.steps[1].at,
                    started,
                    started + seconds,
                )
        raise TestRunning(f"device {device_id!r} is getting new plans; try again")

    def wait(self, flash: Flash) -> Outcome:
        """Block until the outcome is known (at most until the flash's deadline)."""
        key = (flash.device_id, flash.version)
        while True:
            command = self.stores.outbox.get([key]).get(key)
            mono = self.monotonic()
            outcome = flash.verdict(command, mono)
            if outcome is not None:
                return outcome
            with self._cond:
                self._cond.wait(timeout=max(0.0, min(self.poll_s, flash.deadline - mono)))

    def notify(self, devices: Collection[str] = ()) -> None:
        """Reports of `devices` were stored: let waiting tests look again."""
        with self._cond:
            self._cond.notify_all()


def _real_plan(latest: Command | None) -> Plan | None:
    """The device's real plan: its newest command's, unless that is a test (then the
    test's own way back, which is the real plan from the flash's end on)."""
    if latest is None:
        return None
    try:
        plan = latest.plan
    except ValueError:
        return None
    if plan.test:
        return plan.model_copy(update={"steps": plan.steps[1:]}) if len(plan.steps) > 1 else None
    return plan
