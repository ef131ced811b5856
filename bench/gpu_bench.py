"""Benchmark the batching engine on a GPU: tok/s at 1, 4 and 16 concurrent requests against
the memory-bandwidth roofline for the model's weights.

Each decode step reads every weight once, so one GPU cannot decode more than
``bandwidth / weight bytes`` steps a second, and a batch of N requests no more than N times
that in tokens. The bandwidth is measured here (a large device-to-device copy), the weight
bytes are the loaded model's. The engine runs as the server runs it: bfloat16 on CUDA.

    python -m bench.gpu_bench [--model DIR] [--tokens 128] [--concurrency 1,4,16]

Without --model it uses the Gemma 3 270M-shaped random model that bench.inference_bench
builds. On a machine without a CUDA GPU it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

from app.inference.engine import SamplingParams
from app.inference.transformers_engine import TransformersEngine
from bench.inference_bench import PROMPTS, REPO, build_model

COPY_BYTES = 1 << 30  # 1 GiB: large enough to run at the memory's bandwidth


def copy_bandwidth(device: torch.device, repeats: int = 10) -> float:
    """Bytes per second of a device-to-device copy (each byte read once and written once)."""
    source = torch.empty(COPY_BYTES, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        target.copy_(source)
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    del source, target
    torch.cuda.empty_cache()
    return 2 * COPY_BYTES * repeats / seconds


def weight_bytes(engine: TransformersEngine) -> int:
    # parameters() lists tied weights (embedding and output head) once.
    module: torch.nn.Module = engine.model
    return sum(p.numel() * p.element_size() for p in module.parameters())


def concurrent_run(engine: TransformersEngine, level: int, tokens: int) -> float:
    """Aggregate output tokens/s of ``level`` requests started together."""
    prompts = [
        engine.encode(engine.render_chat([{"role": "user", "content": p}]), chat=True)
        for p in PROMPTS
    ]
    barrier = threading.Barrier(level + 1)
    counts: list[int] = []

    def run(index: int) -> None:
        barrier.wait()
        result = engine.generate(
            prompts[index % len(prompts)], SamplingParams(max_tokens=tokens, temperature=0)
        )
        counts.append(result.completion_tokens)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(level)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model folder (default: 270M shape)")
    parser.add_argument("--tokens", type=int, default=128, help="output tokens per request")
    parser.add_argument("--rounds", type=int, default=3, help="runs at each concurrency")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated levels")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "error: no CUDA GPU is visible to torch "
            f"{torch.__version__} (CUDA {torch.version.cuda}): run this on a machine with an "
            "NVIDIA GPU and a CUDA build of torch; `make bench` measures the CPU.",
            file=sys.stderr,
        )
        return 2
    levels = [int(n) for n in args.concurrency.split(",")]
    model_dir = args.model or build_model()
    engine = TransformersEngine(model_dir, model_dir.name)
    device = engine.device
    name = torch.cuda.get_device_name(device)
    bandwidth = copy_bandwidth(device)
    weights = weight_bytes(engine)
    steps_ceiling = bandwidth / weights
    concurrent_run(engine, 1, 8)  # warm-up: kernels, allocator
    rows = [("N", "tok/s", "roofline tok/s", "share of roofline")]
    results: dict[str, object] = {
        "gpu": name,
        "dtype": str(engine.dtype).removeprefix("torch."),
        "copy_bandwidth_gb_s": bandwidth / 1e9,
        "weight_gb": weights / 1e9,
    }
    for level in levels:
        rate = statistics.median(
            concurrent_run(engine, level, args.tokens) for _ in range(args.rounds)
        )
        ceiling = steps_ceiling * level
        rows.append((str(level), f"{rate:.0f}", f"{ceiling:.0f}", f"{rate / ceiling:.0%}"))
        results[str(level)] = {"tokens_per_s": rate, "roofline_tokens_per_s": ceiling}
    engine.close()
    print(
        f"{name}: {results['dtype']}, weights {weights / 1e9:.2f} GB, measured copy bandwidth "
        f"{bandwidth / 1e9:.0f} GB/s, so at most {steps_ceiling:.0f} decode steps/s; "
        f"{args.tokens} tokens a request, greedy, median of {args.rounds} runs"
    )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for index, row in enumerate(rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if index == 0:
            print("| " + " | ".join("-" * w for w in widths) + " |")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
