"""Run every benchmark in turn and print each one's table (`make bench`, about 10 minutes)."""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = ("bench.inference_bench", "bench.chat_bench", "bench.tuning_bench")


def main() -> int:
    failed = []
    for module in BENCHMARKS:
        print(f"\n=== {module} ===", flush=True)
        # A process each, so one benchmark's threads and caches don't skew the next.
        if subprocess.run([sys.executable, "-m", module], check=False).returncode != 0:
            failed.append(module)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
