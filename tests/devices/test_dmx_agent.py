"""`illuminate agent --output sacn`: a plan step reaches a real sACN receiver."""

from __future__ import annotations

from pathlib import Path

import pytest

from devices.protocol import Stage
from tests.devices.dmx_listeners import SacnReceiver
from tests.devices.harness import TestController, in_effect
from tests.devices.test_commands import Proc
from tests.support.mosquitto import Mosquitto


@pytest.mark.broker
def test_agent_drives_an_sacn_floodlight_and_ends_its_stream_on_ctrl_c(
    mosquitto: Mosquitto, controller: TestController, tmp_path: Path
) -> None:
    mosquitto.add_users({"dmx-dev": "s3cret"})
    receiver = SacnReceiver([2])
    # the plan's state, blue #1E50FF at 80 %, on a dimmer-first fixture at address 10
    # with green halved: dimmer 204, red 0x1E, green 0x50 / 2, blue 0xFF
    expected = bytes([204, 0x1E, 0x28, 0xFF])
    argv = ["agent", "--broker", mosquitto.url, "--id", "dmx-dev", "--password", "s3cret"]
    argv += ["--output", "sacn", "--dmx-target", "127.0.0.1", "--dmx-port", str(receiver.port)]
    argv += ["--universe", "2", "--address", "10", "--layout", "drgb", "--gains", "1,0.5,1"]
    proc = Proc(argv, env={"XDG_STATE_HOME": str(tmp_path)})
    try:
        assert proc.wait_line("light output sACN to 127.0.0.1: u2/10 drgb calibrated"), proc.lines
        assert controller.wait_status("dmx-dev", online=True, timeout=15), proc.lines
        controller.send_plan("dmx-dev", in_effect(1))
        assert controller.wait_ack("dmx-dev", 1, Stage.APPLIED, timeout=10)
        frame = receiver.wait_frame(2, lambda f: f[9:13] == expected)
        assert frame is not None, (receiver.frames, proc.lines)
        assert frame[:9] == bytes(9) and frame[13:] == bytes(512 - 13)
        assert proc.interrupt() == 0
        # the stream was terminated on stop, not left to time out
        assert proc.wait_line("sACN output stopped (streams terminated)"), proc.lines
        assert receiver.wait_for(lambda: (2, "timeout") in receiver.events)
        assert not any("Traceback" in line for line in proc.lines), proc.lines
    finally:
        proc.kill()
        receiver.close()
