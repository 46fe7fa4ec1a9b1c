"""Many device sessions on one event loop: one thread, one selector, one timer heap.

Every session keeps its own paho client and TCP connection; the host drives them all
through paho's external-loop API (`on_socket_open`, `on_socket_close`,
`on_socket_register_write`, `on_socket_unregister_write`, `loop_read`, `loop_write`,
`loop_misc`) with `selectors`, so a process carries thousands of devices without a
thread per device. Plan steps and late acks of all devices share the host's
`TimerHeap`.

Connecting is paced: new attempts pass a `ConnectGate` (a rate and a bound on attempts
in flight), and a device whose attempt failed waits a jittered exponential `Backoff`
before it queues again. `summary()` says at any time how many devices are online and
why the others are not.

Threads: everything that touches a paho client runs on the loop thread. Other threads
call `start`, `stop`, `summary`, `online_count` and `call_soon`; a socket callback that
paho fires on another thread (a publish from a test, say) is handed to the loop.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import selectors
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from devices.clock import Clock, system_clock
from devices.pacing import ConnectGate, Pacing
from devices.session import DeviceSession, Phase
from devices.timers import TimerHeap

log = logging.getLogger(__name__)

MISC_S = 2.0
"""How often every open connection gets `loop_misc` (keepalive pings, dead peers)."""
_WAKE = object()


def _is_current(session: DeviceSession, sock: object) -> bool:
    """Whether `sock` is the session's socket now (not one it has closed since)."""
    client = session._client
    return client is not None and client.socket() is sock


def _tls_pending(sock: Any) -> bool:
    pending = getattr(sock, "pending", None)
    return bool(pending()) if pending is not None else False


@dataclass(frozen=True)
class ConnectionSummary:
    """How many devices are online, and why the others are not."""

    total: int
    online: int
    phases: dict[str, int] = field(default_factory=dict)
    """Devices not online, by phase label ("not yet tried", "connecting", ...)."""
    reasons: dict[str, int] = field(default_factory=dict)
    """Devices waiting to retry, by the error that ended their last attempt."""

    @property
    def missing(self) -> int:
        return self.total - self.online

    def line(self) -> str:
        text = f"connected {self.online}/{self.total}"
        if not self.phases:
            return text
        parts = []
        for phase, count in sorted(self.phases.items(), key=lambda kv: -kv[1]):
            part = f"{count} {phase}"
            if phase == Phase.RETRY.value and self.reasons:
                causes = sorted(self.reasons.items(), key=lambda kv: -kv[1])
                part += " (" + "; ".join(f"{n} {why}" for why, n in causes[:5])
                part += "; ...)" if len(causes) > 5 else ")"
            parts.append(part)
        return f"{text}; missing: " + ", ".join(parts)

    @classmethod
    def merge(cls, parts: Sequence[ConnectionSummary]) -> ConnectionSummary:
        phases: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        for part in parts:
            phases.update(part.phases)
            reasons.update(part.reasons)
        return cls(
            total=sum(p.total for p in parts),
            online=sum(p.online for p in parts),
            phases=dict(phases),
            reasons=dict(reasons),
        )


class DeviceHost:
    """Runs device sessions on one loop thread. `start()` once, `stop()` once."""

    def __init__(
        self,
        *,
        clock: Clock = system_clock,
        monotonic: Callable[[], float] = time.monotonic,
        pacing: Pacing | None = None,
        name: str = "devices",
        rng: random.Random | None = None,
    ) -> None:
        self.clock = clock
        self.name = name
        self.cond = threading.Condition()
        self.timers = TimerHeap(clock, monotonic)
        self._monotonic = monotonic
        self.pacing = pacing if pacing is not None else Pacing()
        self._gate = ConnectGate(
            self.pacing.rate,
            burst=self.pacing.burst,
            limit=self.pacing.concurrency,
            monotonic=monotonic,
        )
        self._rng = rng if rng is not None else random.Random()
        self._sessions: list[DeviceSession] = []
        self._start_after: list[float | None] = []
        self._queue: deque[DeviceSession] = deque()
        self._open: set[DeviceSession] = set()
        self._online = 0
        self._calls: deque[Callable[[], object]] = deque()
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._loop_ident: int | None = None
        self._lifecycle = threading.Lock()
        self._started = False
        self._stop_timeout: float | None = None

    # ------------------------------------------------------------------ lifecycle

    def add(self, session: DeviceSession, *, start_after: float | None = None) -> None:
        """Add a session before `start()`; it connects at start, or `start_after` s later."""
        if self._started:
            raise RuntimeError("add sessions before the host starts")
        self._sessions.append(session)
        self._start_after.append(start_after)

    @property
    def sessions(self) -> list[DeviceSession]:
        return list(self._sessions)

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def start(self) -> None:
        """Start the loop thread; devices connect in the background. Returns at once."""
        with self._lifecycle:
            if self._started:
                raise RuntimeError(f"{self.name} was already started")
            self._started = True
            self._selector = selectors.DefaultSelector()
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
            for session, delay in zip(self._sessions, self._start_after, strict=True):
                session.open()
                # the loop thread does not run yet: its queue and timers are ours
                if delay is None:
                    self._enqueue(session)
                else:
                    self.set_phase(session, Phase.SCHEDULED)
                    session.retry_timer = self.timers.call_later(
                        delay, functools.partial(self._retry, session)
                    )
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop cleanly within about `timeout` s: `online:false` sent, disconnected.

        Safe to call more than once, and before `start()`.
        """
        with self._lifecycle:
            if not self._started:
                self._started = True  # a host that never ran cannot start later
                return
            if self._stop_timeout is not None:
                first = False
            else:
                self._stop_timeout = max(0.0, timeout)
                first = True
        if first:
            self._wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout + 5.0)
            if thread.is_alive():
                log.warning("%s: the loop did not stop in %.1fs", self.name, timeout + 5.0)

    def call_soon(self, fn: Callable[[], object]) -> None:
        """Run `fn` on the loop thread soon (thread-safe)."""
        self._calls.append(fn)
        self._wake()

    # ------------------------------------------------------------------ observation

    def online_count(self) -> int:
        return self._online

    def summary(self) -> ConnectionSummary:
        phases: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        with self.cond:
            for session in self._sessions:
                phase = session.phase
                if phase is Phase.ONLINE:
                    continue
                phases[phase.value] += 1
                if phase is Phase.RETRY:
                    reasons[session.last_error or "unknown"] += 1
            return ConnectionSummary(
                total=len(self._sessions),
                online=self._online,
                phases=dict(phases),
                reasons=dict(reasons),
            )

    # ------------------------------------------------------------------ for sessions

    def set_phase(self, session: DeviceSession, phase: Phase) -> None:
        with self.cond:
            before = session.phase
            session.phase = phase
            self._online += (phase is Phase.ONLINE) - (before is Phase.ONLINE)
            self.cond.notify_all()

    def attempt_answered(self, session: DeviceSession) -> None:
        """The broker answered the CONNECT: the attempt's gate slot is free again."""
        if session.holding_slot:
            session.holding_slot = False
            self._gate.release()

    def connection_ended(self, session: DeviceSession) -> None:
        """The connection closed (or an attempt failed): retry after a backoff."""
        self.attempt_answered(session)
        session.tcp_pending = False
        if self._stop_timeout is not None or session.phase is Phase.STOPPED:
            return
        if session.retry_timer is not None:
            return  # already waiting
        session.failures += 1
        delay = self.pacing.backoff.delay(session.failures, self._rng)
        self.set_phase(session, Phase.RETRY)
        session.retry_timer = self.timers.call_later(delay, lambda: self._retry(session))

    # ------------------------------------------------------------------ paho socket callbacks

    def on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        session: DeviceSession = userdata
        selector = self._selector
        if selector is None:
            return
        try:
            selector.register(sock, selectors.EVENT_READ, session)
        except (KeyError, ValueError, OSError) as exc:
            log.error("device %s: cannot watch its socket: %s", session.device_id, exc)
            return
        self._open.add(session)

    def on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        session: DeviceSession | None = userdata
        selector = self._selector
        if selector is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                selector.unregister(sock)
        if session is not None:
            self._open.discard(session)

    def on_socket_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._watch(userdata, sock, selectors.EVENT_READ | selectors.EVENT_WRITE)

    def on_socket_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._watch(userdata, sock, selectors.EVENT_READ)

    def _watch(self, session: DeviceSession | None, sock: Any, events: int) -> None:
        if session is None:
            return
        if threading.get_ident() != self._loop_ident:
            self.call_soon(lambda: self._watch(session, sock, events))
            return
        selector = self._selector
        if selector is None or not _is_current(session, sock):
            return  # a socket closed meanwhile
        # closed behind our back, it fails: the next sweep notices
        with contextlib.suppress(KeyError, ValueError, OSError):
            selector.modify(sock, events, session)

    # ------------------------------------------------------------------ the loop

    def _wake(self) -> None:
        wake = self._wake_w
        if wake is None:
            return
        with contextlib.suppress(OSError):  # already awake (buffer full), or closed
            wake.send(b"\0")

    def _run(self) -> None:
        self._loop_ident = threading.get_ident()
        try:
            next_misc = self._monotonic() + MISC_S
            while self._stop_timeout is None:
                now = self._monotonic()
                timeout = min(self.timers.timeout(MISC_S), max(0.0, next_misc - now))
                if self._queue:
                    gate_wait = self._gate.wait_s()
                    if gate_wait is not None:
                        timeout = min(timeout, gate_wait)
                self._io(timeout)
                self.timers.run_due()
                self._pump()
                if self._monotonic() >= next_misc:
                    self._sweep()
                    next_misc = self._monotonic() + MISC_S
            self._shutdown(self._stop_timeout)
        except Exception:
            log.exception("%s: the device loop failed", self.name)
            raise
        finally:
            self._close_loop()

    def _io(self, timeout: float) -> None:
        """Wait for socket events up to `timeout` s, handle them and the posted calls."""
        selector = self._selector
        assert selector is not None
        if self._calls:
            timeout = 0.0
        for key, mask in selector.select(timeout):
            if key.data is _WAKE:
                self._drain_wake()
                continue
            self._dispatch(key.data, key.fileobj, mask)
        while self._calls:
            fn = self._calls.popleft()
            try:
                fn()
            except Exception:
                log.exception("%s: a posted call failed", self.name)

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _dispatch(self, session: DeviceSession, sock: Any, mask: int) -> None:
        client = session._client
        if client is None or not _is_current(session, sock):
            return
        try:
            if session.tcp_pending:
                session.tcp_pending = False
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    session.note_error(f"socket error: {os.strerror(err)}")
            if mask & selectors.EVENT_READ:
                client.loop_read()
                # TLS may hold decrypted bytes that the selector cannot see
                for _ in range(64):
                    if not _is_current(session, sock) or not _tls_pending(sock):
                        break
                    client.loop_read()
            if mask & selectors.EVENT_WRITE and _is_current(session, sock):
                client.loop_write()
        except Exception:
            log.exception("device %s: the connection failed", session.device_id)

    def _enqueue(self, session: DeviceSession) -> None:
        if session.phase is not Phase.RETRY:
            self.set_phase(session, Phase.QUEUED)
        self._queue.append(session)

    def _retry(self, session: DeviceSession) -> None:
        session.retry_timer = None
        self._enqueue(session)

    def _pump(self) -> None:
        """Start queued attempts as far as the gate lets them."""
        while self._queue and self._gate.try_acquire():
            self._attempt(self._queue.popleft())

    def _attempt(self, session: DeviceSession) -> None:
        session.holding_slot = True
        session.attempts += 1
        session.last_error = None
        session.tcp_pending = True
        self.set_phase(session, Phase.CONNECTING)
        try:
            session.client.reconnect()
        except Exception as exc:
            session.note_socket_error(exc)
            session.attempt_failed()
            self.connection_ended(session)

    def _sweep(self) -> None:
        """`loop_misc` for every open connection: keepalive, dead peers, stuck connects."""
        for session in list(self._open):
            client = session._client
            if client is None:
                continue
            sock = client.socket()
            try:
                if sock is not None and sock.fileno() == -1:
                    client.loop_read()  # closed behind our back: paho sees the error
                else:
                    client.loop_misc()
            except Exception:
                log.exception("device %s: the connection failed", session.device_id)

    # ------------------------------------------------------------------ stopping

    def _shutdown(self, timeout: float) -> None:
        deadline = self._monotonic() + timeout
        self._queue.clear()
        for session in self._sessions:
            if session.retry_timer is not None:
                session.retry_timer.cancel()
                session.retry_timer = None
            session.device.close()
        self._sweep_dead()
        pending: list[mqtt.MQTTMessageInfo] = []
        for session in self._sessions:
            if session.session_up and session._client is not None:
                info = session._client.publish(
                    session.device.status_topic, session.device.offline(), qos=1, retain=True
                )
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    pending.append(info)
        while pending and self._monotonic() < deadline:
            self._io(min(0.05, max(0.0, deadline - self._monotonic())))
            pending = [info for info in pending if not info.is_published()]
        for session in self._sessions:
            client = session._client
            if client is not None and client.socket() is not None:
                client.disconnect()
        while self._open and self._monotonic() < deadline:
            self._io(min(0.05, max(0.0, deadline - self._monotonic())))
        for session in list(self._open):
            log.info("device %s: closing a connection that did not end", session.device_id)
            client = session._client
            sock = client.socket() if client is not None else None
            if sock is not None:
                self.on_socket_close(client, session, sock)  # type: ignore[arg-type]
                sock.close()
        self._open.clear()
        with self.cond:
            for session in self._sessions:
                session.session_up = False
                self.set_phase(session, Phase.STOPPED)
                session.release()

    def _sweep_dead(self) -> None:
        for session in list(self._open):
            client = session._client
            sock = client.socket() if client is not None else None
            if client is not None and sock is not None and sock.fileno() == -1:
                try:
                    client.loop_read()
                except Exception:
                    log.exception("device %s: the connection failed", session.device_id)

    def _close_loop(self) -> None:
        selector, self._selector = self._selector, None
        if selector is not None:
            selector.close()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._wake_r = self._wake_w = None
        with self.cond:
            self.cond.notify_all()
