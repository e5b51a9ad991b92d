"""On a GPU: what the speed switches give, and whether data streamed from S3 keeps the GPU busy.

    python bench/gpu.py [--models unet resnet34 deeplab] [--sizes 256 512] [--batch 16] [--steps 20]
                        [--no-compile] [--stream-tiles 1024] [--stream-size 512] [--stream-workers 12]
                        [--no-throughput] [--no-stream]
    python bench/gpu.py --smoke     # a minute on a CPU: every path runs, the figures mean nothing

1. Throughput: for each model and tile size, training steps (forward, loss, backward, Adam step) of the
   job's SegmentationModule on one in-memory batch of raw uint8 tiles, scaled on the device as in a
   training, under each variant of the switches: ``32`` (fp32), ``bf16-mixed`` (``torch.autocast``, as
   Lightning's precision plugin does), ``bf16-mixed`` + ``channels_last``, and + ``compile``. Images/s
   over ``--steps`` timed steps after warm-up steps (compilation included in the warm-up), each
   variant's ratio to fp32, and the peak GPU memory of the variant
   (``torch.cuda.max_memory_allocated``).
2. Streamed: one ``odeon train`` (``odeon_job.tasks.train.train``, the real job) of unet in bf16-mixed +
   channels_last on ``--stream-tiles`` tiles of ``--stream-size`` pixels on moto's S3 server, started
   on this machine's loopback, read through ``/vsis3/`` by ``--stream-workers`` DataLoader workers.
   Two epochs; ``nvidia-smi`` samples the GPU's utilisation every 100 ms, and the second epoch's
   samples (the first includes cuDNN's autotuning and the workers' start) give the mean and the share
   of samples at 90 % or more.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import pytorch_lightning as pl  # noqa: E402

from odeon_job.commands.demo import CLASS_LABELS, demo_config, write_dataset  # noqa: E402
from odeon_job.config import config_from_dict  # noqa: E402
from odeon_job.data.spec import DataSpec  # noqa: E402
from odeon_job.tasks import train as training_task  # noqa: E402
from odeon_job.tasks import training_outputs  # noqa: E402
from odeon_job.training.segmentation_module import SegmentationModule  # noqa: E402

from s3_bench import moto_with, on_s3  # noqa: E402

#: (label, precision, channels_last, compile)
VARIANTS = [
    ("fp32", "32", False, False),
    ("bf16-mixed", "bf16-mixed", False, False),
    ("bf16-mixed + channels_last", "bf16-mixed", True, False),
    ("bf16-mixed + channels_last + compile", "bf16-mixed", True, True),
]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_module(model: str, channels_last: bool, compile_model: bool, bands: int = 3) -> SegmentationModule:
    """The job's module, built from a configuration as a training builds it."""
    config = config_from_dict(
        {
            "data_source": {"train_file": "unused.csv", "percentage_val": 0.25},
            "train_setup": {
                "model_name": model,
                "batch_size": 1,
                "lr": 0.001,
                "channels_last": channels_last,
                "compile": compile_model,
            },
            "output_setup": {"output_folder": "unused"},
        }
    )
    spec = DataSpec(
        image_bands=tuple(range(1, bands + 1)),
        mask_bands=tuple(range(1, len(CLASS_LABELS) + 1)),
        class_labels=tuple(CLASS_LABELS),
        mask_encoding="one_hot",
        image_max_value=None,
        resolution={"train": None, "val": None, "test": None},
    )
    return SegmentationModule.from_config(config.model_dump(mode="json"), spec)


def throughput(
    model: str,
    size: int,
    batch: int,
    steps: int,
    warmup: int,
    variant: tuple[str, str, bool, bool],
    device: torch.device,
) -> tuple[float, float | None]:
    """(images/s, peak GPU memory in GB or None on a CPU) of training steps under ``variant``."""
    _, precision, channels_last, compile_model = variant
    torch.manual_seed(0)
    module = make_module(model, channels_last, compile_model).to(device)
    module.train()
    optimizer = module.configure_optimizers()["optimizer"]
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    masks = torch.randint(0, len(CLASS_LABELS), (batch, size, size), device=device)
    bf16 = precision == "bf16-mixed"
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = module.criterion(module(module.scale_images(images, "train")), masks)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    rate = steps * batch / (time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    return rate, peak


def throughput_table(args: argparse.Namespace, device: torch.device) -> None:
    variants = VARIANTS if args.compile else VARIANTS[:-1]
    print(
        f"## Training steps on {device_name(device)}: batch {args.batch}, {args.steps} timed steps after "
        f"{args.warmup} warm-up steps"
    )
    print("| model | tile | variant | images/s | ÷ fp32 | peak GPU memory (GB) |")
    print("|---|---:|---|---:|---:|---:|")
    for model in args.models:
        for size in args.sizes:
            base = None
            for variant in variants:
                rate, peak = throughput(model, size, args.batch, args.steps, args.warmup, variant, device)
                base = base or rate
                memory = f"{peak:.2f}" if peak is not None else "-"
                print(f"| {model} | {size}² | {variant[0]} | {rate:.1f} | {rate / base:.2f} | {memory} |", flush=True)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"


class UtilisationSampler:
    """``nvidia-smi`` in loop mode: (monotonic time, GPU utilisation %) every ``period_ms``."""

    def __init__(self, period_ms: int = 100) -> None:
        self.samples: list[tuple[float, float]] = []
        self.process = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", f"-lms={period_ms}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                self.samples.append((time.monotonic(), float(line.strip().split(",")[0])))

    def between(self, start: float, end: float) -> list[float]:
        return [value for when, value in self.samples if start <= when <= end]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


class EpochClock(pl.Callback):
    """Monotonic start and end of every training epoch (validation excluded)."""

    def __init__(self) -> None:
        self.epochs: list[tuple[float, float]] = []
        self.started = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.started = time.monotonic()

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.epochs.append((self.started, time.monotonic()))


@contextlib.contextmanager
def extra_callback(callback: pl.Callback) -> Iterator[None]:
    """Add ``callback`` to the job's own (through the hook that adds the optional ones)."""
    original = training_outputs.optional_callbacks
    with mock.patch.object(training_outputs, "optional_callbacks", lambda config: [*original(config), callback]):
        yield


def streamed_training(args: argparse.Namespace, device: torch.device) -> None:
    with tempfile.TemporaryDirectory() as folder:
        dataset = write_dataset(
            os.path.join(folder, "data"), n_train=args.stream_tiles, n_val=args.batch, n_test=0, size=args.stream_size
        )
        config: dict[str, Any] = demo_config(dataset, os.path.join(folder, "out"), epochs=2)
        config["data_source"].pop("test_file")
        config["train_setup"].update(
            model_name="unet",
            batch_size=args.batch,
            lr=0.001,
            precision="bf16-mixed" if device.type == "cuda" else "32",
            channels_last=True,
        )
        config["output_setup"].update(use_mlflow=False, use_tensorboard=False, progress=0)
        config["device_setup"] = {
            "accelerator": device.type if device.type == "cuda" else "cpu",
            "num_workers": args.stream_workers,
        }
        with moto_with(dataset.folder) as prefix:
            job = config_from_dict(config)
            job = job.model_copy(update={"data_source": on_s3(job.data_source, prefix)})
            clock = EpochClock()
            sampler = UtilisationSampler() if device.type == "cuda" else None
            try:
                with extra_callback(clock):
                    training_task.train(job)
            finally:
                if sampler is not None:
                    sampler.stop()
        start, end = clock.epochs[-1]
        print(
            f"## Streamed training: unet, {args.stream_tiles} tiles of {args.stream_size}² on moto (S3, "
            f"127.0.0.1), {args.stream_workers} workers, batch {args.batch}, {job.train_setup.precision} + "
            "channels_last; second epoch"
        )
        print("| epoch (s) | images/s | GPU utilisation, mean (%) | samples ≥ 90 % | samples |")
        print("|---:|---:|---:|---:|---:|")
        if sampler is None:
            print(f"| {end - start:.1f} | {args.stream_tiles / (end - start):.1f} | - | - | 0 |")
            return
        values = sampler.between(start, end)
        busy = sum(value >= 90 for value in values) / max(len(values), 1)
        mean = statistics.fmean(values) if values else float("nan")
        print(
            f"| {end - start:.1f} | {args.stream_tiles / (end - start):.1f} | {mean:.1f} | {busy:.0%} | {len(values)} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["unet", "resnet34", "deeplab"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--stream-tiles", type=int, default=1024)
    parser.add_argument("--stream-size", type=int, default=512)
    parser.add_argument("--stream-workers", type=int, default=12)
    parser.add_argument("--no-stream", dest="stream", action="store_false")
    parser.add_argument("--no-throughput", dest="throughput", action="store_false")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on whatever device there is")
    args = parser.parse_args()
    if args.smoke:
        args.models, args.sizes, args.batch, args.steps, args.warmup = ["lightunet"], [64], 2, 2, 1
        args.stream_tiles, args.stream_size, args.stream_workers = 8, 64, 2
        args.compile = args.compile and torch.cuda.is_available()  # inductor on a CPU needs a C++ toolchain
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.smoke:
        sys.exit("bench/gpu.py: no GPU here (torch.cuda.is_available() is False); --smoke runs it on the CPU")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.throughput:
        throughput_table(args, device)
    if args.stream:
        streamed_training(args, device)


if __name__ == "__main__":
    main()
