"""Connection pacing: how fast devices may connect, and how long they wait to retry.

`ConnectGate` bounds both the rate of new connection attempts (a token bucket) and how
many attempts are in flight at once (TCP connect until CONNACK), so that a fleet does
not hit its broker with thousands of CONNECTs in one instant. `Backoff` spaces the
retries of one device: exponential, capped, with jitter so that devices which failed
together do not come back together.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

_EPSILON = 1e-9  # refills add up in floats: 10 x 0.1 s at 1/s is one token


class ConnectGate:
    """A token bucket (`rate` per second, up to `burst` at once) and `limit` slots."""

    def __init__(
        self,
        rate: float,
        *,
        burst: int,
        limit: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("the connect rate must be above 0")
        if burst < 1 or limit < 1:
            raise ValueError("the connect burst and limit must be at least 1")
        self.rate = rate
        self.burst = burst
        self.limit = limit
        self._monotonic = monotonic
        self._tokens = float(burst)
        self._at = monotonic()
        self.in_flight = 0

    def _refill(self) -> None:
        now = self._monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now

    def try_acquire(self) -> bool:
        """Take a token and a slot for one attempt, if both are free."""
        if self.in_flight >= self.limit:
            return False
        self._refill()
        if self._tokens < 1.0 - _EPSILON:
            return False
        self._tokens = max(0.0, self._tokens - 1.0)
        self.in_flight += 1
        return True

    def release(self) -> None:
        """An attempt ended (CONNACK, refusal or error): its slot is free again."""
        if self.in_flight <= 0:
            raise RuntimeError("release() without a matching try_acquire()")
        self.in_flight -= 1

    def wait_s(self) -> float | None:
        """Seconds until the next token; None while every slot is taken (wait for a release)."""
        if self.in_flight >= self.limit:
            return None
        self._refill()
        return max(0.0, (1.0 - self._tokens) / self.rate)


@dataclass(frozen=True)
class Backoff:
    """Retry delay after `failures` failed attempts in a row: `initial * 2**(failures-1)`,
    capped at `cap`, then scaled by a random factor in [1 - jitter, 1]."""

    initial: float = 1.0
    cap: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.cap:
            raise ValueError("backoff needs 0 < initial <= cap")
        if not 0 <= self.jitter < 1:
            raise ValueError("backoff jitter must be in [0, 1)")

    def delay(self, failures: int, rng: random.Random) -> float:
        base = min(self.cap, self.initial * 2.0 ** min(max(failures - 1, 0), 30))
        return base * (1.0 - self.jitter * rng.random())


@dataclass(frozen=True)
class Pacing:
    """How a host connects its devices: `rate` new attempts per second (up to `burst`
    at once), at most `concurrency` in flight, and the retry `backoff`."""

    rate: float = 500.0
    burst: int = 50
    concurrency: int = 100
    backoff: Backoff = Backoff()

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError("the connect rate must be above 0")
        if self.burst < 1 or self.concurrency < 1:
            raise ValueError("the connect burst and concurrency must be at least 1")
