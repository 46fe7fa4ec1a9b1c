"""Receivers for the DMX tests, on loopback and a free port each.

- `SacnReceiver`: the `sacn` package's own receiver (what a lighting console or node
  runs), unicast; it sees each universe's data when it changes, and the stream's end.
- `RawSacn`: a plain UDP socket that keeps every sACN packet (data and sync), to check
  keep-alive, Stream_Terminated and synchronisation on the wire.
- `ArtNetListener`: a plain UDP socket that parses ArtDmx and ArtSync.

Each waits for what it is told to with a deadline; none sleeps for a fixed time.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sacn import sACNreceiver
from sacn.messages.data_packet import DataPacket

DEADLINE_S = 5.0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class _Waitable:
    def __init__(self) -> None:
        self._cond = threading.Condition()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = DEADLINE_S) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def _changed(self) -> None:
        with self._cond:
            self._cond.notify_all()


class SacnReceiver(_Waitable):
    """The `sacn` package's receiver on 127.0.0.1:`port`, listening on `universes`."""

    def __init__(self, universes: list[int], port: int | None = None) -> None:
        super().__init__()
        self.port = port or free_udp_port()
        self.frames: dict[int, bytes] = {}
        self.events: list[tuple[int, str]] = []
        self._receiver = sACNreceiver(bind_address="127.0.0.1", bind_port=self.port)
        for universe in universes:
            self._receiver.register_listener("universe", self._on_data, universe=universe)
        self._receiver.register_listener("availability", self._on_availability)
        self._receiver.start()

    def _on_data(self, packet: DataPacket) -> None:
        with self._cond:
            self.frames[packet.universe] = bytes(packet.dmxData)
            self._cond.notify_all()

    def _on_availability(self, universe: int, changed: str) -> None:
        with self._cond:
            self.events.append((universe, changed))
            self._cond.notify_all()

    def wait_frame(
        self, universe: int, predicate: Callable[[bytes], bool], timeout: float = DEADLINE_S
    ) -> bytes | None:
        def seen() -> bool:
            frame = self.frames.get(universe)
            return frame is not None and predicate(frame)

        return self.frames[universe] if self.wait_for(seen, timeout) else None

    def close(self) -> None:
        self._receiver.stop()


@dataclass(frozen=True)
class SacnPacket:
    at: float
    universe: int | None
    """None for a synchronisation packet."""
    data: bytes
    sync_address: int
    terminated: bool
    sequence: int
    cid: bytes


_ROOT_DATA = bytes((0, 0, 0, 4))
_ROOT_EXTENDED = bytes((0, 0, 0, 8))
_EXTENDED_SYNC = bytes((0, 0, 0, 1))


class _UdpListener(_Waitable):
    def __init__(self) -> None:
        super().__init__()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port: int = self._sock.getsockname()[1]
        self._running = True
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while self._running:
            try:
                raw = self._sock.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._cond:
                self._take(raw, time.monotonic())
                self._cond.notify_all()

    def _take(self, raw: bytes, at: float) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._running = False
        self._thread.join(2)
        self._sock.close()


class RawSacn(_UdpListener):
    """Every sACN data and sync packet that reaches 127.0.0.1:`port`."""

    def __init__(self) -> None:
        self.packets: list[SacnPacket] = []
        super().__init__()

    def _take(self, raw: bytes, at: float) -> None:
        if raw[18:22] == _ROOT_DATA:
            packet = DataPacket.make_data_packet(list(raw))
            self.packets.append(
                SacnPacket(
                    at,
                    packet.universe,
                    bytes(packet.dmxData),
                    packet.syncAddr,
                    packet.option_StreamTerminated,
                    packet.sequence,
                    bytes(packet.cid),
                )
            )
        elif raw[18:22] == _ROOT_EXTENDED and raw[40:44] == _EXTENDED_SYNC:
            # E1.31 6.3: framing layer vector, sequence (44), sync address (45-46)
            sync = int.from_bytes(raw[45:47], "big")
            self.packets.append(SacnPacket(at, None, b"", sync, False, raw[44], raw[22:38]))

    def of(self, universe: int | None) -> list[SacnPacket]:
        with self._cond:
            return [p for p in self.packets if p.universe == universe]


@dataclass(frozen=True)
class ArtPacket:
    at: float
    opcode: int
    universe: int | None
    data: bytes
    sequence: int


class ArtNetListener(_UdpListener):
    """ArtDmx (opcode 0x5000) and ArtSync (0x5200) that reach 127.0.0.1:`port`."""

    def __init__(self) -> None:
        self.packets: list[ArtPacket] = []
        super().__init__()

    def _take(self, raw: bytes, at: float) -> None:
        if raw[:8] != b"Art-Net\x00" or len(raw) < 14:
            return
        opcode = int.from_bytes(raw[8:10], "little")
        if opcode == 0x5000 and len(raw) >= 18:
            length = int.from_bytes(raw[16:18], "big")
            universe = int.from_bytes(raw[14:16], "little")  # SubUni, then Net
            self.packets.append(ArtPacket(at, opcode, universe, raw[18 : 18 + length], raw[12]))
        elif opcode == 0x5200:
            self.packets.append(ArtPacket(at, opcode, None, b"", 0))

    def dmx(self, universe: int) -> list[ArtPacket]:
        with self._cond:
            return [p for p in self.packets if p.opcode == 0x5000 and p.universe == universe]

    def syncs(self) -> list[ArtPacket]:
        with self._cond:
            return [p for p in self.packets if p.opcode == 0x5200]

    def latest(self, universe: int) -> bytes | None:
        packets = self.dmx(universe)
        return packets[-1].data if packets else None
