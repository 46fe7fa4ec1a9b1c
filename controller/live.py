"""Live commands: what a device that takes no plan is sent at a transition.

A third-party controller (`devices/adapters/`) cannot arm a plan: it is sent its target
at the transition's instant, and a command that arrives late would switch the light at
the wrong time (say, on after the window has closed). So a live command is time-bound:
it is the one step in force (`at`, `state`) with a `not_after`, by default the end of
the span it is for, the next change of the site's timeline (for a window's light, the
window's end). It is carried as a one-step plan body, so it goes through the outbox and
its lifecycle like a plan version; the dispatcher never publishes one whose `not_after`
has passed: it turns EXPIRED (`controller/dispatch.py`).

Turning the step into the vendor's messages is the adapter's `command(target)`; sending
live commands through adapters comes with registering third-party devices in the
controller.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from devices.protocol import Plan, PlanStep


def live_command(
    steps: Sequence[PlanStep], now: datetime, version: int, not_after: datetime | None = None
) -> Plan | None:
    """The live command for `now` from a device's steps (as `SiteSteps.steps` gives them:
    the step in force, then the changes to come): that step, valid until `not_after`,
    by default the next change. None when no step is in force yet."""
    current: PlanStep | None = None
    following: PlanStep | None = None
    for step in steps:
        if step.at <= now:
            current = step
        else:
            following = step
            break
    if current is None:
        return None
    if not_after is None and following is not None:
        not_after = following.at
    return Plan(version=version, issued_at=now, not_after=not_after, steps=[current])
