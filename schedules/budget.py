"""What one evaluation may spend: a step count and a deadline on a monotonic clock.

A `Budget` is made by whoever starts an evaluation (a request, a command) and passed down
to the code that iterates; `spend()` is called at every step. The clock is a seam: the
caller passes `time.monotonic` or a test's fake, never the wall clock, so a deadline can
neither be cheated by a clock step nor need a real wait in a test.
"""

from __future__ import annotations

from collections.abc import Callable


class EvaluationRefused(ValueError):
    """An input that would cost more to evaluate than the limits allow.

    `path` names the field at fault (`windows[3].rrule`, or `(top)` for the whole
    campaign); the message says which limit and by how much.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class Budget:
    """At most `steps` steps, and no step after `seconds` have passed on `monotonic`."""

    def __init__(
        self,
        monotonic: Callable[[], float],
        seconds: float | None = None,
        steps: int | None = None,
    ) -> None:
        if seconds is not None and seconds <= 0:
            raise ValueError("seconds must be positive")
        if steps is not None and steps <= 0:
            raise ValueError("steps must be positive")
        self.monotonic = monotonic
        self.seconds = seconds
        self.steps = steps
        self.deadline = None if seconds is None else monotonic() + seconds
        self.spent = 0
        self.where = "(top)"
        """The field being evaluated, named in the refusal."""

    def restart(self) -> None:
        """Start the deadline now (after reading what the evaluation needs, say)."""
        self.deadline = None if self.seconds is None else self.monotonic() + self.seconds

    def spend(self, steps: int = 1) -> None:
        self.spent += steps
        if self.steps is not None and self.spent > self.steps:
            raise EvaluationRefused(
                self.where,
                f"evaluating this takes more than {self.steps:,} steps; "
                "use fewer windows, sites or dates, or simpler recurrence rules",
            )
        if self.deadline is not None and self.monotonic() > self.deadline:
            raise EvaluationRefused(
                self.where,
                f"evaluating this takes longer than {self.seconds:g} s; "
                "use fewer windows, sites or dates, or simpler recurrence rules",
            )
