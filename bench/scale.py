"""Start-up time and peak memory of a training against the length of its CSV: both must stay flat.

    python bench/scale.py [--rows 100 10000 100000] [--repeats 3] [--workers 2]
    python bench/scale.py --scene 8192 --rows 1 1000      # rows of scenes (the same one, repeated)

For each row count, a training CSV of that many rows (the demo's 16 tiles repeated) and a 2-row
validation CSV; a fresh process runs ``odeon_job.tasks.train.train`` (lightunet, batch 8, ``testing``: 4
batches, no TensorBoard or MLflow) and reports:

- start-up: from just before the process is started to the start of the first training step
  (imports, CSV parsing, the first-sample checks, Lightning's set-up, the workers' first batch);
- peak RSS of the training process (its VmHWM), and the largest peak among its DataLoader workers.

Medians of ``--repeats`` runs per row count; the ratios compare with the first (smallest) count.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def child(config_path: str) -> None:
    """Run the training; print when its first step starts and the peaks of memory."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from odeon_job.config import load_config
    from odeon_job.tasks.train import train
    from odeon_job.training.segmentation_module import SegmentationModule

    first: list[float] = []
    step = SegmentationModule.training_step

    def timed_step(self: SegmentationModule, batch: object, index: int) -> object:
        if not first:
            first.append(time.time())
        return step(self, batch, index)

    SegmentationModule.training_step = timed_step  # type: ignore[method-assign]
    train(load_config(config_path))
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"first_step": first[0], "peak_mb": peak, "worker_peak_mb": workers}))


def run_once(config_path: str) -> dict[str, float]:
    started = time.time()
    result = subprocess.run(
        [sys.executable, __file__, "--child", config_path],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        "startup": figures["first_step"] - started,
        "peak_mb": figures["peak_mb"],
        "worker_peak_mb": figures["worker_peak_mb"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", type=int, default=[100, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--scene",
        type=int,
        metavar="SIZE",
        help="rows naming one SIZE² scene read in windows of "
        '256² (train_windows "area": each row gives SIZE² / 256² windows an epoch) instead of tiles',
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from odeon_job.commands.demo import demo_config, write_dataset

    with tempfile.TemporaryDirectory() as folder:
        dataset = write_dataset(os.path.join(folder, "data"), n_train=16, n_val=2, n_test=1)
        tiles = open(dataset.train_csv).read().splitlines()
        if args.scene:  # every row names the same scene (its mask's class indices): the rows, not the data, grow
            from scenes import write_scene

            os.makedirs(os.path.join(folder, "scene"))
            tiles = [open(write_scene(os.path.join(folder, "scene"), args.scene)).read().strip()]
        configs = {}
        for rows in args.rows:
            csv = os.path.join(folder, "scene" if args.scene else "data", f"train_{rows}.csv")
            with open(csv, "w") as stream:
                stream.writelines(f"{tiles[i % len(tiles)]}\n" for i in range(rows))
            config = demo_config(dataset, os.path.join(folder, "out"))
            config["data_source"].update(train_file=csv)
            config["data_source"].pop("test_file")
            if args.scene:
                config["data_source"].update(
                    val_file=os.path.join(folder, "scene", "scenes.csv"),
                    patch_size=256,
                    mask_bands=[1],
                    data_augmentation=None,
                )
            config["train_setup"].update(batch_size=8, testing=True, epochs=1)
            config["output_setup"].update(
                version_name=f"rows-{rows}", use_tensorboard=False, use_mlflow=False, progress=0
            )
            config["device_setup"] = {"accelerator": "cpu", "num_workers": args.workers}
            configs[rows] = os.path.join(folder, f"config_{rows}.json")
            with open(configs[rows], "w") as stream:
                json.dump(config, stream)
        runs: dict[int, list[dict[str, float]]] = {rows: [] for rows in args.rows}
        for _ in range(args.repeats):  # interleaved, so that drifts of the machine hit every size alike
            for rows in args.rows:
                version = os.path.join(folder, "out", "demo", f"rows-{rows}")
                subprocess.run(["rm", "-rf", version], check=True)
                runs[rows].append(run_once(configs[rows]))
        print(f"lightunet, batch 8, 4 training batches, {args.workers} workers; median of {args.repeats} runs")
        if args.scene:
            print(f"rows naming one {args.scene}² scene, windows of 256²")
        print("| CSV rows | start-up (s) | ÷ first | peak RSS (MB) | ÷ first | worker peak RSS (MB) |")
        print("|---:|---:|---:|---:|---:|---:|")
        base = None
        for rows in args.rows:
            figures = {key: statistics.median(run[key] for run in runs[rows]) for key in runs[rows][0]}
            base = base or figures
            print(
                f"| {rows:,} | {figures['startup']:.2f} | {figures['startup'] / base['startup']:.3f} | "
                f"{figures['peak_mb']:.0f} | {figures['peak_mb'] / base['peak_mb']:.3f} | "
                f"{figures['worker_peak_mb']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
