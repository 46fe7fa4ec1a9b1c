"""DMX floodlights on the wire: sACN and Art-Net to real receivers on loopback.

The values must land at each head's address with its calibration applied; sACN must
keep every universe alive, end its streams on stop and synchronise universes when told.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise

import pytest

from devices.colour import Correction
from devices.dmx import Head, Layout
from devices.dmx_artnet import ArtNetOutput
from devices.dmx_fixture import DmxFixture
from devices.dmx_sacn import SacnOutput
from devices.protocol import LightState
from tests.devices.dmx_listeners import ArtNetListener, RawSacn, SacnReceiver

UN_BLUE = LightState(on=True, color="#009EDB", level=80)
TAME_GREEN = Correction.from_gains(1.0, 0.62, 1.0)
RECEIVER_TIMEOUT_S = 2.5
"""E1.31's E131_NETWORK_DATA_LOSS_TIMEOUT: a receiver drops a source silent this long."""


@pytest.fixture
def raw_sacn() -> Iterator[RawSacn]:
    listener = RawSacn()
    try:
        yield listener
    finally:
        listener.close()


@pytest.fixture
def artnet() -> Iterator[ArtNetListener]:
    listener = ArtNetListener()
    try:
        yield listener
    finally:
        listener.close()


def test_sacn_receiver_sees_calibrated_values_at_each_address() -> None:
    receiver = SacnReceiver([1, 2])
    fixture = DmxFixture(
        [Head(1, 10, Layout.DRGB, TAME_GREEN, "north"), Head(2, 1, Layout.RGBW, name="south")],
        SacnOutput(destination="127.0.0.1", port=receiver.port),
    )
    try:
        fixture.apply(UN_BLUE)
        one = receiver.wait_frame(1, lambda f: f[9:13] != bytes(4))
        two = receiver.wait_frame(2, lambda f: f[0:4] != bytes(4))
        assert one is not None and two is not None, receiver.frames
        assert one[9:13] == bytes([204, 0, 98, 219])  # dimmer 80 %, green tamed
        assert one[:9] == bytes(9) and one[13:] == bytes(512 - 13)
        assert two[:4] == bytes([0, 126, 175, 0])
        fixture.apply(LightState(on=False))
        assert receiver.wait_frame(1, lambda f: f == bytes(512)) is not None
    finally:
        fixture.close()
        receiver.close()


def test_sacn_keeps_sending_and_terminates_its_streams_on_stop(raw_sacn: RawSacn) -> None:
    output = SacnOutput(destination="127.0.0.1", port=raw_sacn.port, priority=150)
    output.start()
    frame = bytes([1, 2, 3]) + bytes(509)
    try:
        output.send({7: frame})
        # unchanged, the universe is sent again and again (at least once a second)
        assert raw_sacn.wait_for(lambda: len(raw_sacn.of(7)) >= 3)
    finally:
        output.stop()
    assert raw_sacn.wait_for(lambda: sum(p.terminated for p in raw_sacn.of(7)) >= 3)
    packets = raw_sacn.of(7)
    live = [p for p in packets if not p.terminated]
    assert all(p.data == frame for p in live)
    gaps = [b.at - a.at for a, b in pairwise(live)]
    assert max(gaps) < RECEIVER_TIMEOUT_S, gaps
    # the stream ends with three Stream_Terminated packets, in sequence
    assert [p.terminated for p in packets[-3:]] == [True, True, True]
    # each packet ahead of the one before, as a receiver requires (E1.31 6.7.2: one
    # that is not, by up to 20, is dropped). Loopback UDP may lose a packet when this
    # machine is busy, so a step of more than one is a loss, not a fault; none goes
    # back or repeats
    sequences = [p.sequence for p in packets]
    steps = [(b - a) % 256 for a, b in pairwise(sequences)]
    assert all(1 <= step <= 20 for step in steps), sequences
    assert steps[-2:] == [1, 1], sequences  # the three terminations, back to back
    assert all(p.sync_address == 0 for p in packets)
    # the source keeps one CID, the same after a restart
    assert {p.cid for p in packets} == {output.cid.bytes}
    assert SacnOutput(source_name="Illuminate", port=raw_sacn.port).cid == output.cid


def test_sacn_synchronises_universes_on_the_sync_universe(raw_sacn: RawSacn) -> None:
    fixture = DmxFixture(
        [Head(1, 1, Layout.RGB), Head(2, 1, Layout.RGB)],
        SacnOutput(destination="127.0.0.1", port=raw_sacn.port, sync_universe=9),
    )
    try:
        fixture.apply(UN_BLUE)
        assert raw_sacn.wait_for(lambda: len(raw_sacn.of(None)) >= 1)
        first_sync = raw_sacn.of(None)[0]
        assert first_sync.sync_address == 9
        for universe in (1, 2):
            data = [p for p in raw_sacn.of(universe) if p.at <= first_sync.at]
            assert data, f"no data on universe {universe} before the sync packet"
            assert data[0].sync_address == 9 and data[0].data[:3] == bytes([0, 126, 175])
        # kept alive in synchronised rounds while nothing changes
        assert raw_sacn.wait_for(lambda: len(raw_sacn.of(None)) >= 2)
        assert len(raw_sacn.of(1)) >= 2 and len(raw_sacn.of(2)) >= 2
    finally:
        fixture.close()
    for universe in (1, 2):
        assert raw_sacn.wait_for(lambda u=universe: sum(p.terminated for p in raw_sacn.of(u)) >= 3)
        assert [p.terminated for p in raw_sacn.of(universe)[-3:]] == [True, True, True]


def test_artnet_node_sees_calibrated_values_and_artsync(artnet: ArtNetListener) -> None:
    # universe 257 is net 1, sub-net 0, universe 1: its two bytes go low byte first
    fixture = DmxFixture(
        [Head(257, 1, Layout.RGB, TAME_GREEN), Head(3, 508, Layout.RGBWA)],
        ArtNetOutput("127.0.0.1", port=artnet.port, sync=True),
    )
    try:
        fixture.apply(UN_BLUE.model_copy(update={"level": 100}))
        assert artnet.wait_for(lambda: bool(artnet.dmx(257)) and bool(artnet.dmx(3)))
        assert artnet.dmx(257)[0].data[:4] == bytes([0, 98, 219, 0])
        assert artnet.dmx(3)[0].data[507:512] == bytes([0, 158, 219, 0, 0])
        assert artnet.wait_for(lambda: bool(artnet.syncs()))
        assert artnet.syncs()[0].at >= artnet.dmx(257)[0].at
        # unchanged, each universe is sent again
        assert artnet.wait_for(lambda: len(artnet.dmx(257)) >= 2)
        assert artnet.dmx(257)[-1].data == artnet.dmx(257)[0].data
    finally:
        fixture.close()


def test_an_sacn_target_that_does_not_resolve_fails_the_step() -> None:
    # the package's sockets are IPv4: an IPv6 target is refused at once, with no lookup
    fixture = DmxFixture([Head(1, 1)], SacnOutput(destination="::1"))
    with pytest.raises(OSError, match="cannot resolve the sACN target '::1'"):
        fixture.apply(UN_BLUE)
    fixture.close()
