"""Every model of the zoo: parameters, CPU forward+backward time per tile, peak memory.

    python bench/models.py [--size 256] [--batch 4] [--repeats 3] [--bands 3] [--classes 5] [MODEL ...]

Each model runs in a process of its own, so its peak resident memory (the kernel's VmHWM) is its own:
"peak" is the whole process, "step adds" the growth of the peak over the memory held once the model and
the input batch exist: what training adds (gradients, Adam's two moments, activations). Time is the median of
``--repeats`` timed steps (forward, cross-entropy, backward, Adam step) after one warm-up step, divided
by the batch size. Uses every CPU core torch sees.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def _memory_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(name: str, size: int, batch: int, repeats: int, bands: int, classes: int) -> dict[str, float]:
    import torch

    from odeon_job.training.models import build_model

    torch.manual_seed(0)
    model = build_model(name, bands, classes)
    optimizer = torch.optim.Adam(model.parameters())
    image = torch.randn(batch, bands, size, size)
    target = torch.randint(0, classes, (batch, size, size))
    held = _memory_mb("VmRSS")

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(image), target).backward()
        optimizer.step()

    step()  # warm-up: allocates the optimizer state and the allocator's caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "ms_per_tile": 1000 * statistics.median(times) / batch,
        "peak_mb": _memory_mb("VmHWM"),
        "step_adds_mb": _memory_mb("VmHWM") - held,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="models to measure (default: all)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bands", type=int, default=3)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one model, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.size, args.batch, args.repeats, args.bands, args.classes)))
        return

    from odeon_job.training.models import MODELS

    names = args.models or list(MODELS)
    print(
        f"{args.batch} tiles of {args.size}x{args.size}, {args.bands} bands, {args.classes} classes; "
        f"median of {args.repeats} steps (forward, cross-entropy, backward, Adam)\n"
    )
    print("| model | parameters | CPU ms per tile | peak RSS (MB) | step adds (MB) |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        command = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--size",
            str(args.size),
            "--batch",
            str(args.batch),
            "--repeats",
            str(args.repeats),
            "--bands",
            str(args.bands),
            "--classes",
            str(args.classes),
        ]
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        print(
            f"| {name} | {result['parameters'] / 1e6:.2f} M | {result['ms_per_tile']:.0f} | "
            f"{result['peak_mb']:.0f} | {result['step_adds_mb']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
