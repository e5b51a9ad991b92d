"""Class colours: the ones ``data_source.class_colors`` gives, else a default palette that colour-blind readers can
tell apart. One list per model, kept in its checkpoint, used by every class map, style file and figure."""

from __future__ import annotations

import colorsys
import re
from collections.abc import Sequence

#: Okabe & Ito's colours (less black: figures draw ignored pixels black), then Paul Tol's "muted" ten:
#: distinguishable with the common colour vision deficiencies, the most different first.
DEFAULT_PALETTE = (
    "#0072b2",
    "#e69f00",
    "#009e73",
    "#cc79a7",
    "#56b4e9",
    "#d55e00",
    "#f0e442",
    "#332288",
    "#88ccee",
    "#44aa99",
    "#117733",
    "#999933",
    "#ddcc77",
    "#cc6677",
    "#882255",
    "#aa4499",
    "#dddddd",
)

COLOR_PATTERN = re.compile(r"^#[0-9a-fA-F]{6}$")


def default_colors(n: int) -> list[str]:
    """``n`` colours: the palette, then (beyond its 17) well separated hues, the same for the same ``n``."""
    colors = list(DEFAULT_PALETTE[:n])
    for i in range(n - len(colors)):
        r, g, b = colorsys.hsv_to_rgb((0.05 + i * 0.618034) % 1.0, 0.75 if i % 2 else 0.95, 0.95 if i % 2 else 0.7)
        colors.append(f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}")
    return colors


def class_colors(configured: Sequence[str] | None, n: int) -> list[str]:
    """The colours of ``n`` classes: the configured ones (lower case), else the default palette."""
    return [color.lower() for color in configured] if configured else default_colors(n)


def rgb(color: str) -> tuple[int, int, int]:
    """ "#rrggbb" → (r, g, b), 0-255."""
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)
