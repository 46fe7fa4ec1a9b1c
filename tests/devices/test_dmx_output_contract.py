"""One contract for every DMX output: the in-memory one, sACN and Art-Net.

The real outputs are checked by real receivers on loopback: the `sacn` package's
receiver, and a UDP socket that parses ArtDmx.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from devices.dmx import SLOTS
from devices.dmx_artnet import ArtNetOutput
from devices.dmx_output import DmxOutput, MemoryDmxOutput, OutputStopped
from devices.dmx_sacn import SacnOutput
from tests.devices.dmx_listeners import ArtNetListener, SacnReceiver


@dataclass
class Rig:
    output: DmxOutput
    seen: Callable[[int], bytes | None]
    """The last frame a receiver got on a universe (None: nothing yet)."""
    wait: Callable[[Callable[[], bool]], bool]


def _memory() -> Iterator[Rig]:
    output = MemoryDmxOutput()

    def wait(predicate: Callable[[], bool]) -> bool:
        return predicate()  # the memory output holds a frame as soon as it is sent

    yield Rig(output, lambda u: output.frames.get(u), wait)
    output.stop()


def _sacn() -> Iterator[Rig]:
    receiver = SacnReceiver([1, 2])
    output = SacnOutput(destination="127.0.0.1", port=receiver.port)
    try:
        yield Rig(output, lambda u: receiver.frames.get(u), receiver.wait_for)
    finally:
        output.stop()
        receiver.close()


def _artnet() -> Iterator[Rig]:
    listener = ArtNetListener()
    output = ArtNetOutput("127.0.0.1", port=listener.port)
    try:
        yield Rig(output, listener.latest, listener.wait_for)
    finally:
        output.stop()
        listener.close()


@pytest.fixture(params=["memory", "sacn", "artnet"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    make = {"memory": _memory, "sacn": _sacn, "artnet": _artnet}[request.param]
    yield from make()


def frame(*values: int) -> bytes:
    return bytes(values) + bytes(SLOTS - len(values))


def test_each_universe_gets_its_own_frame(rig: Rig) -> None:
    assert isinstance(rig.output, DmxOutput)
    rig.output.start()
    first, second = frame(10, 20, 30), frame(0, 0, 0, 40, 50, 60)
    rig.output.send({1: first, 2: second})
    assert rig.wait(lambda: rig.seen(1) == first and rig.seen(2) == second)
    changed = frame(99, 20, 30)
    rig.output.send({1: changed})
    assert rig.wait(lambda: rig.seen(1) == changed)
    assert rig.seen(2) == second


def test_a_short_frame_is_padded_and_a_bad_one_refused(rig: Rig) -> None:
    rig.output.start()
    rig.output.send({2: bytes([7, 8])})
    assert rig.wait(lambda: rig.seen(2) == frame(7, 8))
    with pytest.raises(ValueError, match="at most 512"):
        rig.output.send({1: bytes(SLOTS + 1)})
    with pytest.raises(ValueError, match="universes run"):
        rig.output.send({64000: frame(1)})


def test_nothing_is_sent_unless_running(rig: Rig) -> None:
    with pytest.raises(OutputStopped):
        rig.output.send({1: frame(1)})
    rig.output.start()
    rig.output.send({1: frame(5)})
    assert rig.wait(lambda: rig.seen(1) == frame(5))
    rig.output.stop()
    rig.output.stop()
    with pytest.raises(OutputStopped):
        rig.output.send({1: frame(6)})
    with pytest.raises(OutputStopped):
        rig.output.start()
