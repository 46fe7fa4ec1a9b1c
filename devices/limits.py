"""The process's file-descriptor budget: every simulated device holds one socket."""

from __future__ import annotations

import resource

SPARE_DESCRIPTORS = 64
"""Descriptors kept for everything else: stdio, logs, the loop's wake-up pair, imports."""


class DescriptorLimitError(RuntimeError):
    """The process may not open as many descriptors as the fleet needs."""


def descriptors_needed(devices: int) -> int:
    return devices + SPARE_DESCRIPTORS


def raise_descriptor_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit.

    Raises DescriptorLimitError, saying what to do, when even the hard limit is below
    `needed`. The limit is left raised either way.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard
        if hard == resource.RLIM_INFINITY:
            target = max(soft, needed) if soft != resource.RLIM_INFINITY else soft
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep the soft limit we have; the check below says whether it is enough
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise DescriptorLimitError(
            f"{needed} file descriptors are needed (one per device and {SPARE_DESCRIPTORS} "
            f"spare) but this process may open only {soft} (hard limit "
            f"{'unlimited' if hard == resource.RLIM_INFINITY else hard}); raise it, for "
            "example with `ulimit -n` or LimitNOFILE=, or simulate fewer devices per process"
        )
    return soft
