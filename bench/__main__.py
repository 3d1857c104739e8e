"""``python -m bench`` (``make bench``): every benchmark, each printing its own figures."""

from __future__ import annotations

import sys

from . import cli_startup, models, payload_size, platforms, pms_recovery, spool_bench


def main() -> int:
    failed = 0
    for name, bench in (
        ("payload size", payload_size.main),
        ("spool", spool_bench.main),
        ("PMS5003 frame recovery", pms_recovery.main),
        ("command-line start-up", lambda: cli_startup.main([])),
        ("models: size, latency, memory, alarm latency", models.main),
        ("platform formats: bytes per report, memory, Mobius latency", platforms.main),
    ):
        print(f"== {name} ==", flush=True)
        failed += bool(bench())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
