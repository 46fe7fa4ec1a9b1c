"""An in-process MQTT broker for the one-machine default.

When no broker is configured, ``illuminate serve`` and ``illuminate demo`` run an embedded
amqtt broker instead of needing Mosquitto.  :class:`EmbeddedBroker` runs amqtt's ``Broker``
on its own asyncio event loop in a dedicated daemon thread, so the rest of the controller
(paho-mqtt, APScheduler, uvicorn) stays unaware of it: it is just ``mqtt://127.0.0.1:PORT``.

Security: every client logs in, and every decision is the `Gate`'s
(`controller/broker/gate.py`), enforced by this module's auth and topic plugins:

* a CONNECT is admitted only when the gate admits its username, password and client id
  (there are no anonymous clients), and, when it carries a will, only when that login may
  publish the will's topic. The decision is taken *before* amqtt touches any session: amqtt
  0.12.1 would otherwise delete the session of a connected client (or take its connection
  over) on behalf of a CONNECT that then fails, so anyone could knock a device offline by
  sending its client id;
* every PUBLISH, SUBSCRIBE and delivery is checked: a refused PUBLISH is dropped (an MQTT
  3.1.1 client still gets its PUBACK, as on Mosquitto), a refused SUBSCRIBE gets the
  failure code 0x80, a message a client may not read is not sent to it;
* every `recheck_s` the broker asks the gate for the stamps of the logged-in users, and
  closes the connections admitted under a stamp that changed: a rotated password, a
  disabled or deleted account stops working at once, even when another process changed it.

It binds the loopback address by default.  It is a single-machine default; anything
reachable from a network should use Mosquitto with the project's configs
(``deploy/mosquitto``).  Binding a non-loopback host is allowed but is the caller's choice.

What it supports (MQTT 3.1.1 only, plain TCP, IPv4 or a host name; no TLS, no websockets):

* QoS 0/1/2, retained messages (an empty retained payload clears one), last will sent when
  the connection drops without DISCONNECT, and retained if the will asked for it;
* persistent sessions (``clean_session=False``): queued QoS 1/2 messages are delivered on
  reconnect (amqtt's stock ``AnonymousAuthPlugin`` would mark every session anonymous,
  which silently turns persistent sessions into clean ones; the plugins here do not);
* port ``0``: the OS picks a free port, and :attr:`EmbeddedBroker.port` / ``url`` report it.

Known amqtt 0.12.1 limits, unlike Mosquitto:

* keep-alive is not enforced: a client that goes silent without its TCP connection closing
  stays "connected" and its will is never sent.  On loopback a dead process's socket is
  always closed by the kernel, so the will does fire there;
* a message is delivered at the subscription's QoS even when it was published at a lower
  one (MQTT says the minimum of the two);
* no ``$SYS`` topics (amqtt's ``BrokerSysPlugin`` is left out), and nothing persists across
  restarts: retained messages and sessions live in memory only;
* a TCP connection that closes before sending CONNECT (a port probe) is logged by amqtt at
  ERROR ("No data from ...").

amqtt and its state-machine library ``transitions`` are noisy at INFO; unless the
application has set their levels already, both loggers are set to WARNING.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from amqtt.broker import Broker
from amqtt.contexts import Action, BrokerConfig, ListenerConfig, ListenerType
from amqtt.errors import MQTTError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.utils import gen_client_id

from controller.broker.gate import Gate

__all__ = ["EmbeddedBroker"]

log = logging.getLogger(__name__)

_AUTH_PLUGIN = f"{__name__}._GateAuthPlugin"
_TOPIC_PLUGIN = f"{__name__}._GateTopicPlugin"
_PLUGIN_NAMESPACE = "amqtt.broker.plugins"
_ADMITTED = "_illuminate_stamp"
"""The session attribute holding the stamp its login was admitted under."""


@dataclass
class _GateConfig:
    gate: Any = None


class _GateAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type hints
    """Admit a CONNECT when the gate admits its login and, if it has a will, the will's
    topic. Sets the session's stamp; never marks a session anonymous (amqtt would then
    drop the offline queue and the subscriptions of ``clean_session=False`` clients)."""

    Config = _GateConfig

    async def authenticate(self, *, session: Any) -> bool:
        gate: Gate = self.config.gate
        username, password, client_id = session.username, session.password, session.client_id
        if not username or password is None or not client_id:
            return False
        try:
            stamp = await asyncio.to_thread(gate.admit, username, password, client_id)
            will = session.will_topic or ""
            if stamp is not None and session.will_flag and not gate.may_publish(username, will):
                log.info("refused %r: its will is on a topic it may not publish", client_id)
                stamp = None
        except Exception:  # a failing gate refuses; it never stops the broker
            log.exception("embedded MQTT broker: the login check failed")
            return False
        setattr(session, _ADMITTED, stamp)
        return stamp is not None


class _GateTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]  # amqtt ships no type hints
    """Every PUBLISH, SUBSCRIBE and delivery, as the gate decides for the session's login."""

    Config = _GateConfig

    async def topic_filtering(
        self, *, session: Any = None, topic: str | None = None, action: Any = None
    ) -> bool:
        return self.decide(session, topic, action)

    def decide(self, session: Any, topic: str | None, action: Any) -> bool:
        """The decision, without suspending (see `_Broker._topic_filtering`)."""
        gate: Gate = self.config.gate
        username = getattr(session, "username", None)
        if not username or topic is None or getattr(session, _ADMITTED, None) is None:
            return False
        try:
            if action == Action.PUBLISH:
                return gate.may_publish(username, topic)
            if action == Action.SUBSCRIBE:
                return gate.may_subscribe(username, topic)
            if action == Action.RECEIVE:
                return gate.may_receive(username, topic)
        except Exception:
            log.exception("embedded MQTT broker: the topic check failed")
        return False


class _Broker(Broker):  # type: ignore[misc]  # amqtt ships no type hints
    """amqtt's Broker, closing every TCP connection it was handed once it is done with it,
    and deciding a login before it touches any session.

    amqtt 0.12.1 leaves the socket open (and the transport to the garbage collector, with a
    ResourceWarning) when a connection ends before a valid CONNECT, e.g. a TCP port probe.
    Closing an already-closed writer is a no-op, so this is safe on every path.
    """

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        try:
            await super().stream_connected(reader, writer, listener_name)
        finally:
            writer.close()

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[Any, Any]:
        """amqtt's own, with the login decided right after the CONNECT is read.

        amqtt decides it only later, after it has deleted the clean session of a client
        with the same id (its subscriptions with it) or handed a persistent one the new
        credentials. A refused CONNECT here gets CONNACK 5 (not authorized) and changes
        nothing else.
        """
        try:
            handler, incoming = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except MQTTError:
            await writer.close()
            raise
        if not await Broker._authenticate(self, incoming, None):
            log.info(
                "embedded MQTT broker refused a login (client id %r, user %r) from %s",
                incoming.client_id,
                incoming.username,
                remote_address,
            )
            connack = ConnackPacket.build(0, NOT_AUTHORIZED)
            await connack.to_stream(writer)
            await writer.close()
            raise MQTTError("not authorized")
        stamp = getattr(incoming, _ADMITTED)
        session = incoming
        if incoming.clean_session:
            if incoming.client_id:
                await self._delete_session(incoming.client_id)
            else:
                incoming.client_id = gen_client_id()
            incoming.parent = 0
        elif incoming.client_id in self._sessions:
            session, _ = self._sessions[incoming.client_id]
            for name in (
                "will_flag",
                "will_message",
                "will_topic",
                "will_qos",
                "will_retain",
                "keep_alive",
                "username",
                "password",
            ):
                setattr(session, name, getattr(incoming, name))
            session.parent = 1
        else:
            incoming.parent = 0
        setattr(session, _ADMITTED, stamp)
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session

    async def _topic_filtering(self, session: Any, topic: str, action: Any) -> bool:
        """The topic plugin's decision, taken without suspending.

        amqtt 0.12.1 asks its plugins through tasks it awaits, and asks for every
        delivery from inside its walk over all subscriptions: another client subscribing
        meanwhile ends that walk with "dictionary changed size during iteration", and the
        message is lost for every subscriber. A check that never suspends cannot let that
        happen.
        """
        plugin = self.plugins_manager.get_plugin(_GateTopicPlugin.__name__)
        return isinstance(plugin, _GateTopicPlugin) and plugin.decide(session, topic, action)

    async def _authenticate(self, session: Any, _listener: Any) -> bool:
        # every session that reaches amqtt's own check was admitted by
        # _initialize_client_session, under the stamp it carries
        return getattr(session, _ADMITTED, None) is not None

    def logged_in(self) -> list[tuple[Any, Any]]:
        """(session, handler) of every connected client."""
        return [
            (session, handler)
            for session, handler in list(self._sessions.values())
            if session.transitions.state == "connected" and handler is not None
        ]

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Any
    ) -> None:
        """Send retained messages only to a session that holds this subscription.

        On every connect, amqtt 0.12.1 walks *all* topic filters of *all* clients and
        sends the matching retained messages to the new client: a device would receive
        retained messages it never subscribed to, and the walk, awaiting inside the loop
        over a dict other connections change, fails with "dictionary changed size during
        iteration" when many clients connect at once. Returning at once (no await) for
        filters the session does not hold fixes both.
        """
        holders = self._subscriptions.get(subscription[0], ())
        if not any(held.client_id == session.client_id for held, _qos in holders):
            return
        await super()._publish_retained_messages_for_subscription(subscription, session)


def _quiet_library_logging() -> None:
    for name in ("amqtt", "transitions"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


def _format_bind(host: str, port: int) -> str:
    return f"{host}:{port}"


def _check_port_free(host: str, port: int) -> None:
    """Fail fast, with a clear message, if ``host:port`` is already taken.

    amqtt would fail too, but only after logging an ERROR with a traceback.  The check
    binds the way asyncio's server does (SO_REUSEADDR), so a port held only by
    TIME_WAIT connections of a previous run counts as free, as it will for the broker.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise RuntimeError(f"embedded MQTT broker: cannot resolve host {host!r}: {exc}") from exc
    for family, type_, proto, _canon, sockaddr in infos:
        with socket.socket(family, type_, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as asyncio's create_server does
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise RuntimeError(
                        f"embedded MQTT broker: {_format_bind(host, port)} is already in use "
                        "(another broker running? configure that broker's URL instead, "
                        "or choose another port)"
                    ) from exc
                raise RuntimeError(
                    f"embedded MQTT broker: cannot bind {_format_bind(host, port)}: {exc}"
                ) from exc


class EmbeddedBroker:
    """amqtt running in a background thread; see the module docstring.

    >>> with EmbeddedBroker(port=0, gate=gate) as broker:  # doctest: +SKIP
    ...     connect_somewhere(broker.url)

    ``gate`` decides every login and every topic (see the module docstring); there is no
    default, and so no broker without one.

    ``start()`` blocks until the listening socket is open (or raises ``RuntimeError``);
    ``stop()`` shuts amqtt down, waits for its thread and is safe to call twice.  A stopped
    broker can be started again; with ``port=0`` it then gets a new free port.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        gate: Gate,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        recheck_s: float = 0.5,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, got {port}")
        if ":" in host:
            # amqtt 0.12.1 hands "[::1]" to asyncio with the brackets and fails to resolve it.
            raise ValueError(f"embedded MQTT broker: IPv6 addresses are not supported ({host!r})")
        if gate is None:
            raise ValueError("embedded MQTT broker: a gate is required (no anonymous clients)")
        self.host = host
        self.requested_port = port
        self.gate = gate
        self.recheck_s = recheck_s
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._bound_port: int | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- public API -------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the broker listens on (the OS-chosen one when constructed with 0)."""
        if self._bound_port is not None:
            return self._bound_port
        if self.requested_port == 0:
            raise RuntimeError("embedded MQTT broker: port 0 is only known once started")
        return self.requested_port

    @property
    def url(self) -> str:
        return f"mqtt://{_format_bind(self.host, self.port)}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._ready.is_set()

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("embedded MQTT broker is already running")
            _quiet_library_logging()
            if self.requested_port != 0:
                _check_port_free(self.host, self.requested_port)
            self._ready = threading.Event()
            self._error = None
            self._bound_port = None
            thread = threading.Thread(
                target=self._thread_main,
                name=f"embedded-mqtt-{_format_bind(self.host, self.requested_port)}",
                daemon=True,
            )
            self._thread = thread
            thread.start()
            if not self._ready.wait(self.start_timeout):
                self._shutdown_thread()
                raise RuntimeError(
                    f"embedded MQTT broker did not start within {self.start_timeout:g} s "
                    f"on {_format_bind(self.host, self.requested_port)}"
                )
            if self._error is not None:
                error = self._error
                self._shutdown_thread()
                raise RuntimeError(
                    f"embedded MQTT broker could not listen on "
                    f"{_format_bind(self.host, self.requested_port)}: {_root_cause(error)}"
                ) from error
            log.info("embedded MQTT broker listening on %s", self.url)

    def stop(self) -> None:
        with self._lock:
            if self._thread is None:
                return
            self._shutdown_thread()
            log.info("embedded MQTT broker stopped")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<EmbeddedBroker {_format_bind(self.host, self.requested_port)} {state}>"

    # -- thread side ------------------------------------------------------------------

    def _shutdown_thread(self) -> None:
        """Ask the loop to stop and join the thread. Caller holds ``self._lock``."""
        thread = self._thread
        loop, stop_event = self._loop, self._stop_event
        if loop is not None and stop_event is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed: thread is ending
                loop.call_soon_threadsafe(stop_event.set)
        if thread is not None:
            thread.join(self.stop_timeout)
            if thread.is_alive():
                raise RuntimeError(
                    f"embedded MQTT broker thread did not stop within {self.stop_timeout:g} s"
                )
        self._thread = None
        self._loop = None
        self._stop_event = None

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # report, never let the thread die silently
            if not self._ready.is_set():
                self._error = exc
            else:
                log.exception("embedded MQTT broker crashed")
        finally:
            self._ready.set()

    def _config(self) -> BrokerConfig:
        listener = ListenerConfig(
            type=ListenerType.TCP,
            bind=_format_bind(self.host, self.requested_port),
            max_connections=0,
        )
        plugins = {_AUTH_PLUGIN: {"gate": self.gate}, _TOPIC_PLUGIN: {"gate": self.gate}}
        return BrokerConfig(listeners={"default": listener}, plugins=plugins)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        broker = _Broker(self._config(), plugin_namespace=_PLUGIN_NAMESPACE)
        try:
            await broker.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        recheck = asyncio.create_task(self._recheck_logins(broker))
        try:
            self._bound_port = _listening_port(broker)
            self._ready.set()
            await self._stop_event.wait()
        finally:
            recheck.cancel()
            await asyncio.gather(recheck, return_exceptions=True)
            await broker.shutdown()
            _forget_plugin_manager(broker)
            await _cancel_leftover_tasks()

    async def _recheck_logins(self, broker: _Broker) -> None:
        """Close the connections whose login's stamp changed (see the module docstring)."""
        seen: Any = None
        while True:
            await asyncio.sleep(self.recheck_s)
            try:
                revision = await asyncio.to_thread(self.gate.revision)
                if revision == seen:
                    continue
                clients = broker.logged_in()
                names = {s.username for s, _h in clients if s.username}
                stamps = await asyncio.to_thread(self.gate.stamps, names) if names else {}
                for session, handler in clients:
                    admitted = getattr(session, _ADMITTED, None)
                    if admitted is None or stamps.get(session.username) != admitted:
                        log.info(
                            "embedded MQTT broker: closing %r, its account changed",
                            session.client_id,
                        )
                        setattr(session, _ADMITTED, None)
                        if handler.writer is not None:
                            await handler.writer.close()
                seen = revision
            except asyncio.CancelledError:
                raise
            except Exception:  # keep checking: a locked file now is a readable one later
                log.exception("embedded MQTT broker: checking the logins failed")


def _listening_port(broker: Any) -> int:
    # amqtt has no public accessor for the bound address; Server.instance is the
    # asyncio.Server created by asyncio.start_server.
    server = broker._servers["default"].instance
    return int(server.sockets[0].getsockname()[1])


def _forget_plugin_manager(broker: Any) -> None:
    # amqtt keeps the last PluginManager per namespace in a module-level dict, which would
    # keep a stopped Broker (and its context) alive for the life of the process.
    from amqtt.plugins import manager

    if manager.plugins_manager.get(_PLUGIN_NAMESPACE) is broker.plugins_manager:
        del manager.plugins_manager[_PLUGIN_NAMESPACE]


async def _cancel_leftover_tasks() -> None:
    current = asyncio.current_task()
    leftovers = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    if not leftovers:
        return
    log.debug("embedded MQTT broker: cancelling %d leftover task(s)", len(leftovers))
    for task in leftovers:
        task.cancel()
    await asyncio.wait(leftovers, timeout=2.0)


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc
