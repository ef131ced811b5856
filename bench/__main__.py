"""Run every benchmark in turn and print each one's table (`make bench`, about 10 minutes)."""

from __future__ import annotations

import argparse
import subprocess
import sys

BENCHMARKS = (
    "bench.inference_bench",
    "bench.peer_bench",
    "bench.chat_bench",
    "bench.tuning_bench",
    "bench.finetune_bench",
)


def main(argv: list[str] | None = None) -> int:
    names = [module.removeprefix("bench.") for module in BENCHMARKS]
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "only", nargs="*", metavar="NAME", help=f"run only these: {', '.join(names)}"
    )
    chosen = parser.parse_args(argv).only
    if unknown := sorted(set(chosen) - set(names)):
        parser.error(f"no benchmark named {', '.join(unknown)}; choose from {', '.join(names)}")
    failed = []
    for module in (m for m in BENCHMARKS if not chosen or m.removeprefix("bench.") in chosen):
        print(f"\n=== {module} ===", flush=True)
        # A process each, so one benchmark's threads and caches don't skew the next.
        if subprocess.run([sys.executable, "-m", module], check=False).returncode != 0:
            failed.append(module)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
