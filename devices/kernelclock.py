"""Is this machine's clock synchronised? The kernel's own answer, for the state report.

A device applies its plan by its own clock, which NTP (chrony, ntpd, systemd-timesyncd)
keeps right. On Linux the kernel knows whether that discipline holds: `adjtimex(2)`,
asked without changing anything, answers with a status whose `STA_UNSYNC` bit is set
while the clock is not synchronised. The agent reports that as `clock_synced` in its
state report (docs/protocol.md). Elsewhere, or when the call fails, the answer is
None, and the field is left out.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

STA_UNSYNC = 0x0040
TIME_ERROR = 5


class _Timex(ctypes.Structure):
    """`struct timex` of <sys/timex.h> (Linux), as far as it is read here, then padding."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("rest", ctypes.c_long * 32),
    ]


def kernel_clock_synced() -> bool | None:
    """True when the kernel says the clock is synchronised, False when it says it is
    not, None when it cannot be asked (not Linux, no libc, a refused call)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name, use_errno=True)
        timex = _Timex()  # modes 0: read only
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != TIME_ERROR and not timex.status & STA_UNSYNC
