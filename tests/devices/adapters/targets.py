"""The targets the adapter tests use."""

from devices.protocol import LightState

BLUE_80 = LightState(on=True, color="#0000FF", level=80)
BLUE_100 = LightState(on=True, color="#0000FF", level=100)
UN_BLUE_80 = LightState(on=True, color="#009EDB", level=80)
GREEN_80 = LightState(on=True, color="#00FF00", level=80)
BLUE_80_FADE = LightState(on=True, color="#0000FF", level=80, transition_s=2)
OFF = LightState(on=False)
