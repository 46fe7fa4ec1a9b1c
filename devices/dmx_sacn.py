"""sACN (ANSI E1.31) output, on the `sacn` package's sender.

- **Unicast or multicast.** With a destination the packets go to that receiver; without,
  to each universe's multicast group 239.255.{hi}.{lo} (and universe discovery runs).
- **Keep-alive.** A receiver drops a source it has not heard for 2.5 s
  (E131_NETWORK_DATA_LOSS_TIMEOUT), so every universe is sent again at least once a
  second while nothing changes, and at once when it does.
- **Clean stop.** `stop` sends three packets with the Stream_Terminated option on every
  universe (E1.31 section 6.2.6), so receivers let go of the source at once instead of
  waiting out the timeout.
- **Synchronisation.** With a sync universe, every data packet names it and a
  synchronisation packet follows each round of data packets (E1.31 section 6.2.4): the
  receivers hold the new frames and show them together on the sync packet, so heads on
  several universes switch at the same instant. In unicast the sync packets go to the
  destination too.
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections.abc import Mapping

from sacn import sACNsender
from sacn.messages.data_packet import calculate_multicast_addr
from sacn.messages.root_layer import RootLayer
from sacn.messages.sync_packet import SyncPacket
from sacn.sending.sender_socket_base import SenderSocketListener
from sacn.sending.sender_socket_udp import SenderSocketUDP

from devices.dmx_output import OutputStopped, check_frames

log = logging.getLogger(__name__)

SACN_PORT = 5568
UNIVERSES = range(1, 64000)
PRIORITIES = range(0, 201)
DEFAULT_PRIORITY = 100
KEEPALIVE_S = 1.0
"""How often an unchanged universe is sent again (the receivers' timeout is 2.5 s)."""
FPS = 30
"""How often the sending thread looks for changed frames."""
DISCOVERY_GROUP = calculate_multicast_addr(64214)
"""E1.31 universe discovery goes to the multicast group of universe 64214."""
_CID_NAMESPACE = uuid.UUID("6f1d7c4e-3b0a-5d2e-9c41-2a7e0b5f8d13")


def source_cid(name: str) -> uuid.UUID:
    """A CID that stays the same for a source name across restarts.

    Receivers tell sources apart by CID (E1.31 section 5.6): an agent that restarts
    with the same CID is the same source coming back, not a second one.
    """
    return uuid.uuid5(_CID_NAMESPACE, name)


def check_universe(universe: int) -> int:
    if isinstance(universe, bool) or not isinstance(universe, int) or universe not in UNIVERSES:
        raise ValueError(f"sACN universes run 1-63999, not {universe!r}")
    return universe


def _resolve(host: str, port: int) -> None:
    """OSError saying so when `host` is not an IPv4 address or a name that resolves to one."""
    try:
        socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as exc:
        raise OSError(f"cannot resolve the sACN target {host!r}: {exc}") from None


class _Unattached(SenderSocketListener):  # type: ignore[misc]
    def on_periodic_callback(self, time: float) -> None:
        return None


class _Socket(SenderSocketUDP):  # type: ignore[misc]
    """The package's UDP socket, with the receivers' port as a setting, sync packets
    sent to a unicast destination where there is one, discovery on its multicast group,
    a daemon sending thread, and a send error kept and logged rather than raised (it
    would end the package's sending thread); `SacnOutput.send` reports it."""

    def __init__(self, bind_address: str, port: int, unicast: str | None) -> None:
        super().__init__(_Unattached(), bind_address, 0, FPS)
        self.port = port
        self.unicast = unicast
        self.error: str | None = None
        """Why the last packet could not be sent; None once one is."""

    def attach(self, listener: SenderSocketListener) -> None:
        self._listener = listener

    def start(self) -> None:
        self._thread = threading.Thread(target=self.send_loop, name="sACN sender", daemon=True)
        self._thread.start()

    def halt(self) -> None:
        """End the periodic sending and wait for it, leaving the socket open: what is
        sent next (the stream terminations) cannot race a periodic send for a
        universe's sequence number."""
        self._enabled_flag = False
        thread = getattr(self, "_thread", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def send_multicast(self, data: RootLayer, destination: str, ttl: int) -> None:
        if isinstance(data, SyncPacket) and self.unicast is not None:
            self.send_packet(data.getBytes(), self.unicast)
            return
        super().send_multicast(data, destination, ttl)

    def send_broadcast(self, data: RootLayer) -> None:
        self.send_multicast(data, DISCOVERY_GROUP, 8)

    def send_packet(self, data: bytearray | tuple[int, ...], destination: str) -> None:
        try:
            self._socket.sendto(bytes(data), (destination, self.port))
        except OSError as exc:
            if self.error is None:
                log.warning("sACN: cannot send to %s:%d: %s", destination, self.port, exc)
            self.error = f"cannot send sACN to {destination}:{self.port}: {exc.strerror or exc}"
            return
        if self.error is not None:
            log.info("sACN: sending to %s:%d again", destination, self.port)
        self.error = None


class SacnOutput:
    """Sends frames as sACN. `destination` None means multicast.

    `sync_universe` turns synchronisation on (it must not be one of the data universes).
    """

    protocol = "sACN"
    universes = UNIVERSES

    def __init__(
        self,
        *,
        destination: str | None = None,
        port: int = SACN_PORT,
        priority: int = DEFAULT_PRIORITY,
        sync_universe: int | None = None,
        source_name: str = "Illuminate",
        bind_address: str = "0.0.0.0",
        keepalive_s: float = KEEPALIVE_S,
        cid: uuid.UUID | None = None,
    ) -> None:
        """`cid` identifies the source to receivers (default: from `source_name`)."""
        if priority not in PRIORITIES:
            raise ValueError(f"sACN priority runs 0-200, not {priority!r}")
        if sync_universe is not None:
            check_universe(sync_universe)
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port!r} is outside 1-65535")
        self.destination = destination
        self.port = port
        self.priority = priority
        self.sync_universe = sync_universe
        # E1.31 source names are 64 bytes of UTF-8, NUL included
        self.source_name = source_name.encode("utf-8")[:63].decode("utf-8", "ignore")
        self.bind_address = bind_address
        self.keepalive_s = keepalive_s
        self.cid = cid if cid is not None else source_cid(source_name)
        self._lock = threading.Lock()
        self._sender: sACNsender | None = None
        self._socket: _Socket | None = None
        self._stopped = False
        self._wake = threading.Event()
        self._keepalive: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            if self._stopped:
                raise OutputStopped("the sACN output was stopped; make a new one")
            if self._sender is not None:
                return
            if self.destination is not None:
                _resolve(self.destination, self.port)
            sock = _Socket(self.bind_address, self.port, self.destination)
            sender = sACNsender(
                source_name=self.source_name,
                cid=tuple(self.cid.bytes),
                fps=FPS,
                universeDiscovery=self.destination is None,
                sync_universe=self.sync_universe or 63999,
                socket=sock,
            )
            # the package builds its handler around the socket it is given: the socket
            # needs that handler as its listener to drive the periodic sending
            sock.attach(sender._sender_handler)
            if self.sync_universe is not None:
                # the data goes out in synchronised rounds from our own thread
                sender.manual_flush = True
                self._keepalive = threading.Thread(
                    target=self._keep_alive, name="sACN sync", daemon=True
                )
            sender.start()
            self._sender, self._socket = sender, sock
            if self._keepalive is not None:
                self._keepalive.start()
        where = self.destination or "multicast"
        sync = f", synchronised on universe {self.sync_universe}" if self.sync_universe else ""
        log.info("sACN output to %s port %d, priority %d%s", where, self.port, self.priority, sync)

    def send(self, frames: Mapping[int, bytes]) -> None:
        checked = check_frames(frames, self.universes, self.protocol)
        if self.sync_universe in checked:
            raise ValueError(
                f"universe {self.sync_universe} is the sync universe; it carries no data"
            )
        with self._lock:
            sender = self._sender
            if sender is None:
                raise OutputStopped("the sACN output is not running")
            for universe, frame in checked.items():
                if sender[universe] is None:
                    sender.activate_output(universe)
                out = sender[universe]
                assert out is not None
                out.multicast = self.destination is None
                if self.destination is not None:
                    out.destination = self.destination
                out.priority = self.priority
                out.dmx_data = tuple(frame)
            if self.sync_universe is not None:
                sender.flush(list(checked))
            error = self._socket.error if self._socket is not None else None
        if error is not None:
            raise OSError(error)

    def _keep_alive(self) -> None:
        while not self._wake.wait(self.keepalive_s):
            with self._lock:
                sender = self._sender
                if sender is None:
                    return
                if not sender.get_active_outputs():
                    continue
                sender.flush()  # a send error is logged by the socket

    def stop(self) -> None:
        self._wake.set()
        if self._keepalive is not None and self._keepalive is not threading.current_thread():
            self._keepalive.join(timeout=2 * self.keepalive_s + 1)
        with self._lock:
            self._stopped = True
            sender, self._sender = self._sender, None
            if sender is None:
                return
            if self._socket is not None:
                self._socket.halt()
            for universe in sender.get_active_outputs():
                sender.deactivate_output(universe)  # three stream-terminated packets
            sender.stop()
        log.info("sACN output stopped (streams terminated)")

    @property
    def running(self) -> bool:
        with self._lock:
            return self._sender is not None
