"""Decoded plans, shared by the controller's readers.

A command's payload never changes, so its plan is decoded once, by command id (and
once per distinct payload: devices alike are sent the same body), for the reconciler,
the public view and the dispatcher alike; the lights of all plans are shared objects (a
campaign night has a handful of distinct lights and 10,000 plans). `keep` drops the
plans of commands that are no longer anyone's newest.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from functools import lru_cache

from controller.store.base import Command
from devices.protocol import LightState, Plan, PlanStep, decode


@lru_cache(maxsize=4096)
def _light(on: bool, color: str, level: int, transition_s: float) -> LightState:
    return LightState.model_construct(on=on, color=color, level=level, transition_s=transition_s)


def _shared(state: LightState) -> LightState:
    return _light(state.on, state.color, state.level, state.transition_s)


def compact(plan: Plan) -> Plan:
    """The same plan, its lights shared with every other compacted plan's."""
    steps = [PlanStep.model_construct(at=s.at, state=_shared(s.state)) for s in plan.steps]
    return plan.model_copy(update={"steps": steps})


PlanOf = Callable[[Command], Plan]
"""A command's plan (raises ProtocolError when its payload does not decode): a
`PlanCache`, or `decoded` where no cache is shared."""


def decoded(command: Command) -> Plan:
    """The command's own plan, decoded (once per Command object)."""
    return command.plan


class PlanCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plans: dict[int, Plan] = {}
        self._by_payload: dict[str, Plan] = {}
        """The same body, the same plan: the devices of one campaign's sites are sent
        the same payload, decoded once (and held once)."""
        self.decoded = 0

    def __call__(self, command: Command) -> Plan:
        """The command's plan; raises ProtocolError when its payload does not decode."""
        with self._lock:
            plan = self._plans.get(command.id)
            if plan is not None:
                return plan
            plan = self._by_payload.get(command.payload)
            if plan is not None:
                self._plans[command.id] = plan
                return plan
        plan = compact(decode(Plan, command.payload))
        with self._lock:
            self._by_payload[command.payload] = plan
            self._plans[command.id] = plan
            self.decoded += 1
        return plan

    def keep(self, command_ids: Collection[int]) -> None:
        """Forget every plan but these commands'."""
        with self._lock:
            self._plans = {i: p for i, p in self._plans.items() if i in command_ids}
            alive = {id(p) for p in self._plans.values()}
            self._by_payload = {k: p for k, p in self._by_payload.items() if id(p) in alive}

    def __len__(self) -> int:
        with self._lock:
            return len(self._plans)
