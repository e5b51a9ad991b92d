"""What a prediction file holds, whoever writes it (the test phase's tiles and scenes, ``odeon predict``):

- ``class``: one uint8 band of class indices (the first class of highest probability, the metrics' rule), the
  classes' colours as its colour table, nodata 255; beside it ``<name>.qml`` (the QGIS style QGIS loads by itself:
  colours and class names) and ``<name>.aux.xml`` (GDAL's category names, which GDAL and QGIS read);
- ``float32``: one band of probabilities per class (softmax for ce and focal, a sigmoid per class for bce and combo),
  each band described with its class's name, nodata -1;
- ``uint8``: the same scaled to 0-255 (all 256 values are probabilities: nodata is an internal mask band);
- ``bit``: the one-hot class, one 1-bit band per class (GeoTIFF ``NBITS=1``; nodata: an internal mask band).

Pixels the image marks as nodata (its nodata value or mask band, in every selected band) are nodata in every type.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

import numpy as np

from odeon_job.config.colors import rgb
from odeon_job.data.windows import GridWindows

#: The class maps' nodata: no class of a model (at most 254 classes in a class map).
CLASS_NODATA = 255
#: The float32 probabilities' nodata: no probability.
FLOAT_NODATA = -1.0
#: Output types whose nodata is an internal mask band (every value of the type is a prediction).
MASKED_TYPES = ("uint8", "bit")


def predicted_class(probabilities: np.ndarray) -> np.ndarray:
    """(classes, H, W) probabilities → (H, W) classes: the first class of highest probability (the metrics' rule,
    ``SegmentationModule.predicted_classes``)."""
    return probabilities.argmax(axis=0)


@dataclass(frozen=True)
class Legend:
    """The classes a model predicts, as its files show them: names and "#rrggbb" colours."""

    labels: tuple[str, ...]
    colors: tuple[str, ...]


def encode(probabilities: np.ndarray, output_type: str, valid: np.ndarray | None = None) -> np.ndarray:
    """(classes, H, W) probabilities → the array written; ``valid`` (H, W): False where the image is nodata (those
    pixels get the type's nodata value; the masked types get it from :func:`mask_of` instead)."""
    if output_type == "float32":
        data = probabilities.astype(np.float32)
        if valid is not None:
            data[:, ~valid] = FLOAT_NODATA
        return data
    if output_type == "uint8":
        return np.round(probabilities * 255).astype(np.uint8)
    classes = predicted_class(probabilities)
    if output_type == "class":
        class_map = classes.astype(np.uint8)[None]
        if valid is not None:
            class_map[:, ~valid] = CLASS_NODATA
        return class_map
    return (classes[None] == np.arange(probabilities.shape[0])[:, None, None]).astype(np.uint8)


def mask_of(output_type: str, valid: np.ndarray) -> np.ndarray | None:
    """The internal mask band (0 nodata, 255 data) written with a masked type, None for the others."""
    return np.where(valid, 255, 0).astype(np.uint8) if output_type in MASKED_TYPES else None


def file_options(output_type: str, n_classes: int) -> dict[str, Any]:
    """The GeoTIFF profile keys of a prediction of ``output_type`` (bands, type, nodata, bits)."""
    if output_type == "class":
        if n_classes > CLASS_NODATA:
            raise ValueError(f"a class map holds at most {CLASS_NODATA} classes")
        return {"count": 1, "dtype": "uint8", "nodata": CLASS_NODATA}
    if output_type == "float32":
        return {"count": n_classes, "dtype": "float32", "nodata": FLOAT_NODATA}
    if output_type == "uint8":
        return {"count": n_classes, "dtype": "uint8"}
    return {"count": n_classes, "dtype": "uint8", "nbits": 1}


def describe(dst: Any, output_type: str, legend: Legend) -> None:
    """Name the bands of an open rasterio dataset being written, and give a class map its colour table."""
    if output_type == "class":
        dst.set_band_description(1, "class")
        table = {index: (*rgb(color), 255) for index, color in enumerate(legend.colors)}
        table[CLASS_NODATA] = (0, 0, 0, 0)  # (a TIFF palette keeps no alpha: nodata is what hides these)
        dst.write_colormap(1, table)
        dst.update_tags(1, **{f"CLASS_{index}": label for index, label in enumerate(legend.labels)})
        return
    for band, label in enumerate(legend.labels, 1):
        dst.set_band_description(band, label)


#: The files beside a prediction of each type, by suffix: a class map's QGIS style and GDAL's category names.
SIDECAR_SUFFIXES = {"class": (".qml", ".aux.xml")}


def sidecars(output_type: str, legend: Legend) -> dict[str, bytes]:
    """The files written beside a prediction, by suffix (:data:`SIDECAR_SUFFIXES`)."""
    if output_type != "class":
        return {}
    return {".qml": qgis_style(legend), ".aux.xml": gdal_categories(legend.labels)}


#: The most memory one stitched scene may hold: a band of patch_size rows across its width, per class (float32
#: sums) and one for the window counts.
MAX_STITCH_BYTES = 4 * 2**30


def widest_band(grid: GridWindows, n_classes: int) -> tuple[int, int]:
    """The row of ``grid`` whose stitching (``outputs.callbacks.stitching``) holds the most memory, and how many
    bytes (checked against :data:`MAX_STITCH_BYTES` before anything is allocated: a header may declare any width)."""
    widths = grid.regions[:, 3]
    row = int(widths.argmax())
    return row, (n_classes + 1) * min(grid.patch, int(grid.regions[row, 2])) * int(widths[row]) * 4


# --- error maps: where the model is wrong, and how ---------------------------------------------------------------


def error_type(n_classes: int) -> tuple[str, int]:
    """The type of an error map of ``n_classes`` classes and its nodata: uint8 while the n(n-1) pairs fit."""
    return ("uint8", 255) if n_classes * (n_classes - 1) < 255 else ("uint16", 65535)


def error_codes(truth: np.ndarray, prediction: np.ndarray, n_classes: int) -> np.ndarray:
    """(H, W) truth and predicted classes → the error map: 0 where right, ``1 + t(n-1) + p'`` for truth t predicted as
    p (p' = p, less one past t), nodata where the truth is no class (ignored, or not scored here)."""
    dtype, nodata = error_type(n_classes)
    scored = (truth >= 0) & (truth < n_classes)
    t, p = truth.astype(np.int64), prediction.astype(np.int64)
    codes = np.where(t == p, 0, 1 + t * (n_classes - 1) + p - (p > t))
    return np.where(scored, codes, nodata).astype(dtype)


def error_legend(legend: Legend) -> Legend:
    """The codes of :func:`error_codes` in words ("water → forest") and colours (the predicted class's)."""
    labels, colors = ["right"], ["#ffffff"]
    for t, truth in enumerate(legend.labels):
        for p, predicted in enumerate(legend.labels):
            if p != t:
                labels.append(f"{truth} → {predicted}")
                colors.append(legend.colors[p])
    return Legend(tuple(labels), tuple(colors))


def describe_errors(dst: Any, legend: Legend) -> None:
    """An error map's band name, colour table (right pixels white: a TIFF palette has no alpha; the QGIS style makes
    them transparent, so the image shows through) and code names."""
    dst.set_band_description(1, "error (truth → prediction)")
    codes = error_legend(legend)
    if dst.dtypes[0] == "uint8":
        dst.write_colormap(1, {code: (*rgb(color), 255) for code, color in enumerate(codes.colors)})
    dst.update_tags(1, **{f"CODE_{code}": label for code, label in enumerate(codes.labels)})


def error_sidecars(legend: Legend) -> dict[str, bytes]:
    """An error map's QGIS style and GDAL category names, by suffix (right pixels transparent in QGIS too)."""
    codes = error_legend(legend)
    return {".qml": qgis_style(codes, transparent=(0,)), ".aux.xml": gdal_categories(codes.labels)}


def row_confusion(truth: np.ndarray, prediction: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, n) pixel counts, rows = truth, columns = prediction, of the scored pixels of one test row."""
    scored = (truth >= 0) & (truth < n_classes)
    pairs = truth[scored].astype(np.int64) * n_classes + prediction[scored].astype(np.int64)
    return np.bincount(pairs, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def sidecar_name(target: str, suffix: str) -> str:
    """Where the sidecar ``suffix`` of the prediction ``target`` goes, as QGIS and GDAL look for it: ``x.tif`` →
    ``x.qml``, ``x.tif.aux.xml``."""
    return posixpath.splitext(target)[0] + suffix if suffix == ".qml" else target + suffix


def qgis_style(legend: Legend, transparent: Sequence[int] = ()) -> bytes:
    """A QGIS layer style (``.qml``) showing band 1 as paletted classes, named and coloured; QGIS applies the style
    named after a file when it opens the file."""
    qgis = ElementTree.Element("qgis", version="3.28.0", styleCategories="Symbology")
    pipe = ElementTree.SubElement(qgis, "pipe")
    renderer = ElementTree.SubElement(
        pipe, "rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1", nodataColor=""
    )
    ElementTree.SubElement(renderer, "rasterTransparency")
    palette = ElementTree.SubElement(renderer, "colorPalette")
    for index, (label, color) in enumerate(zip(legend.labels, legend.colors, strict=True)):
        alpha = "0" if index in transparent else "255"
        ElementTree.SubElement(palette, "paletteEntry", value=str(index), color=color, alpha=alpha, label=label)
    return _xml(qgis, doctype="<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n")


def gdal_categories(labels: Sequence[str]) -> bytes:
    """GDAL's ``.aux.xml`` holding band 1's category names (value i is ``labels[i]``): ``gdalinfo`` lists them, and
    GDAL's API (``GetCategoryNames``) gives them to any program reading the file."""
    dataset = ElementTree.Element("PAMDataset")
    band = ElementTree.SubElement(dataset, "PAMRasterBand", band="1")
    names = ElementTree.SubElement(band, "CategoryNames")
    for label in labels:
        ElementTree.SubElement(names, "Category").text = label
    return _xml(dataset)


def _xml(element: ElementTree.Element, doctype: str = "") -> bytes:
    ElementTree.indent(element)
    return (doctype + ElementTree.tostring(element, encoding="unicode") + "\n").encode()
