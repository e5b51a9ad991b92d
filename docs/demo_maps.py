"""Draws ``docs/demo_maps.png`` (the README's picture) from a demo run: a test tile, its class map and its error map,
coloured as the files themselves say (their colour tables and category names).

    odeon demo --output /tmp/demo && python docs/demo_maps.py /tmp/demo [docs/demo_maps.png]
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import rasterio
from matplotlib.figure import Figure
from matplotlib.patches import Patch


def colours(path: Path) -> tuple[np.ndarray, dict[int, str]]:
    """The file's colour table as a (256, 3) lookup (0-1) and its code names (tags CLASS_i / CODE_i)."""
    with rasterio.open(path) as src:
        table = src.colormap(1)
        tags = src.tags(1)
    lookup = np.zeros((256, 3))
    for value, rgba in table.items():
        lookup[value] = np.array(rgba[:3]) / 255
    names = {int(key.split("_")[1]): name for key, name in tags.items() if key.startswith(("CLASS_", "CODE_"))}
    return lookup, names


def main(demo: str, output: str = "docs/demo_maps.png") -> None:
    run = next((Path(demo) / "runs" / "demo").iterdir())
    rows = list(csv.DictReader((run / "scenes.csv").open()))
    name = min(rows, key=lambda row: float(row["accuracy"]))["map"]  # the tile the model gets most wrong
    image_path = next((Path(demo) / "data").rglob(name))
    with rasterio.open(image_path) as src:
        image = src.read().transpose(1, 2, 0)
    with rasterio.open(run / "predictions" / name) as src:
        classes = src.read(1)
    with rasterio.open(run / "errors" / name) as src:
        errors = src.read(1)
    class_lookup, class_names = colours(run / "predictions" / name)
    error_lookup, error_names = colours(run / "errors" / name)
    overlay = image / 255.0
    wrong = (errors != 0) & (errors != 255)
    overlay[wrong] = error_lookup[errors[wrong]]

    figure = Figure(figsize=(12, 5.2), dpi=100, layout="constrained")
    axes = figure.subplots(1, 3)
    panels = (
        (image, f"a test tile ({name})"),
        (class_lookup[classes], "its class map (predictions/)"),
        (overlay, "its errors over the tile (errors/)"),
    )
    for ax, (pixels, title) in zip(axes, panels, strict=True):
        ax.imshow(pixels, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    present = sorted(set(np.unique(classes)) - {255})
    values, counts = np.unique(errors[wrong], return_counts=True)
    codes = [int(code) for _, code in sorted(zip(counts, values, strict=True), reverse=True)[:5]]  # the most frequent
    figure.legend(
        handles=[Patch(color=class_lookup[c], label=class_names[c]) for c in present]
        + [Patch(color=error_lookup[c], label=f"error: {error_names[c]}") for c in codes],
        loc="outside lower center", ncols=5, fontsize=8,
    )  # fmt: skip
    figure.savefig(output)
    print(f"{output}: {name}, {int(wrong.sum())} wrong pixels of {errors.size}")


if __name__ == "__main__":
    main(*sys.argv[1:])
