"""The command lifecycle: one state machine per device and plan version.

PENDING (committed in the outbox) -> PUBLISHED (broker PUBACK, transport only) ->
RECEIVED -> ARMED -> APPLIED. Final: REJECTED, FAILED, SUPERSEDED, EXPIRED.
UNCONFIRMED (no apply report by the due step's time plus grace) is not final: a late
ack still resolves it. DRIFTED: the reported output left the desired state.

The APPLIED state speaks of the plan's latest due step: when a later step falls due and
is not reported applied within the grace period, the command turns UNCONFIRMED again.
APPLIED -> APPLIED is a transition of its own: a later step of the same version was
confirmed (a window's end after its start). It is stored with its time like any other,
so every confirmed step is in the audit log, and a writer that decided on the earlier
APPLIED loses its compare-and-set.
"""

from __future__ import annotations

from enum import StrEnum


class CommandState(StrEnum):
    PENDING = "pending"
    PUBLISHED = "published"
    RECEIVED = "received"
    ARMED = "armed"
    APPLIED = "applied"
    UNCONFIRMED = "unconfirmed"
    DRIFTED = "drifted"
    REJECTED = "rejected"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    EXPIRED = "expired"


S = CommandState
FINAL = frozenset({S.REJECTED, S.FAILED, S.SUPERSEDED, S.EXPIRED})
_DEVICE_OUTCOMES = {S.REJECTED, S.FAILED, S.EXPIRED, S.SUPERSEDED, S.UNCONFIRMED}

ALLOWED: dict[CommandState, frozenset[CommandState]] = {
    S.PENDING: frozenset({S.PUBLISHED, S.RECEIVED, S.ARMED, S.APPLIED} | _DEVICE_OUTCOMES),
    S.PUBLISHED: frozenset({S.RECEIVED, S.ARMED, S.APPLIED} | _DEVICE_OUTCOMES),
    S.RECEIVED: frozenset({S.ARMED, S.APPLIED} | _DEVICE_OUTCOMES),
    S.ARMED: frozenset({S.APPLIED} | _DEVICE_OUTCOMES),
    S.UNCONFIRMED: frozenset({S.RECEIVED, S.ARMED, S.APPLIED} | _DEVICE_OUTCOMES - {S.UNCONFIRMED}),
    S.APPLIED: frozenset({S.APPLIED, S.UNCONFIRMED, S.DRIFTED, S.SUPERSEDED, S.FAILED}),
    S.DRIFTED: frozenset({S.APPLIED, S.SUPERSEDED, S.UNCONFIRMED, S.FAILED}),
    S.REJECTED: frozenset(),
    S.FAILED: frozenset(),
    S.SUPERSEDED: frozenset(),
    S.EXPIRED: frozenset(),
}

# Acks can overtake each other's processing: never step back along the happy path.
_PROGRESS = {S.PENDING: 0, S.PUBLISHED: 1, S.RECEIVED: 2, S.ARMED: 3, S.APPLIED: 4}


class IllegalTransition(ValueError):
    pass


def can_move(current: CommandState, target: CommandState) -> bool:
    if target not in ALLOWED[current]:
        return False
    if current is S.APPLIED and target is S.APPLIED:
        return True  # a later step confirmed
    if current in _PROGRESS and target in _PROGRESS:
        return _PROGRESS[target] > _PROGRESS[current]
    return True


def check_move(current: CommandState, target: CommandState) -> None:
    if not can_move(current, target):
        raise IllegalTransition(f"{current.value} -> {target.value} is not allowed")
