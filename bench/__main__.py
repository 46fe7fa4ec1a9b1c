"""`make bench` (`python -m bench`): end-to-end scenarios through real MQTT, each beside a
floor measured in the same run. Prints a table and writes bench/results/latest.json.

Asserts nothing: it exits non-zero only when it could not run. Shared machines are
noisy, so compare ratios to the floor, not absolute times, across runs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import e2e, inprocess, live, report
from bench.procs import BenchAborted, stop_on_signals

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "results" / "latest.json"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument(
        "--devices", "-n", type=int, default=1000, help="devices (= sites), default 1000"
    )
    p.add_argument(
        "--shard-size",
        type=int,
        default=10_000,
        help="devices per simulator process (default 10000: one process carries them)",
    )
    p.add_argument("--grace", type=float, default=30.0, help="control.grace_s (default 30)")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds each scenario may wait before giving up (default 60 + 0.12 s per device)",
    )
    p.add_argument(
        "--load-seconds", type=float, default=5.0, help="seconds per status-load run (default 5)"
    )
    p.add_argument(
        "--load-clients",
        default="50,200",
        help="comma-separated client counts for status-load (default 50,200)",
    )
    p.add_argument(
        "--min-lead",
        type=float,
        default=5.0,
        help="least seconds between the replacing PUT and the window's opening (default 5)",
    )
    p.add_argument(
        "--flood-rate",
        type=int,
        default=5000,
        help="state reports a second one device sends in the flood scenario (default 5000)",
    )
    p.add_argument(
        "--flood-seconds",
        type=float,
        default=5.0,
        help="seconds of probing under the flood (default 5; 0 skips the scenario)",
    )
    p.add_argument("--no-in-process", action="store_true", help="skip reconcile-tick")
    p.add_argument("--no-live", action="store_true", help="skip live-fanout (third-party lights)")
    p.add_argument("--live-only", action="store_true", help="run live-fanout alone")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, database)")
    args = p.parse_args(argv)
    if args.devices < 1 or args.shard_size < 1:
        p.error("--devices and --shard-size must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    stop_on_signals()
    clients = tuple(int(c) for c in args.load_clients.split(",") if c.strip())
    opts = e2e.Options(
        devices=args.devices,
        shard_size=args.shard_size,
        grace_s=args.grace,
        timeout_s=args.timeout,
        load_seconds=args.load_seconds,
        load_clients=clients,
        min_lead_s=args.min_lead,
        flood_rate=args.flood_rate,
        flood_seconds=args.flood_seconds,
    )
    settings = {
        "shard_size": opts.shard_size,
        "grace_s": opts.grace_s,
        "scenario_timeout_s": opts.scenario_timeout,
        "load_seconds": opts.load_seconds,
        "load_clients": list(clients),
        "flood_rate": opts.flood_rate,
        "flood_seconds": opts.flood_seconds,
    }
    head = report.header(args.devices, settings, REPO)
    machine = head["machine"]
    print(
        f"Illuminate bench: {args.devices} devices on {machine['cores']} cores, "
        f"{machine['memory_mib']} MiB, Python {machine['python']}, "
        f"Mosquitto {machine['mosquitto']}",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="illuminate-bench-"))
    rows: list[dict[str, Any]] = []
    code = 0
    began = time.monotonic()
    try:
        if not args.live_only:
            e2e.run(opts, workdir, rows)
        if not args.no_live:
            live.run_live(opts, workdir / "live", rows)
        if not args.no_in_process and not args.live_only:
            print(f"  reconcile-tick: {args.devices} sites, in process", flush=True)
            rows.append(inprocess.reconcile_tick(args.devices))
    except KeyboardInterrupt:
        print("bench: interrupted; everything it started is stopped", file=sys.stderr)
        head["error"] = "interrupted"
        code = 130
    except (BenchAborted, RuntimeError, OSError) as exc:
        print(f"bench: could not run: {exc}", file=sys.stderr)
        traceback.print_exc()
        head["error"] = str(exc)
        code = 1
    head["wall_seconds"] = round(time.monotonic() - began, 1)
    report.write(args.out, head, rows)
    print()
    print(report.table(rows))
    print(f"\nresults: {args.out}")
    if code == 0 and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"work folder (logs, database): {workdir}")
    return code


if __name__ == "__main__":
    sys.exit(main())
