"""Small image utilities: tensors to PIL, labelled contact sheets, atomic PNG writes."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .fileio import atomic_write


def to_pil(image) -> Image.Image:
    """(3, H, W) or (1, H, W) float array/tensor in [0, 1] -> RGB PIL image."""
    arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if arr.shape[0] == 1:
        arr = np.repeat(arr, 3, 0)
    return Image.fromarray((np.clip(arr.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8))


def contact_sheet(images: list, labels: list[str] | None = None, columns: int = 4, label_height: int = 18) -> Image.Image:
    """Grid of same-sized images (each (C, H, W) in [0, 1] or a PIL image) with a caption under each."""
    tiles = [im if isinstance(im, Image.Image) else to_pil(im) for im in images]
    if not tiles:
        raise ValueError("contact_sheet needs at least one image")
    w, h = tiles[0].size
    rows = (len(tiles) + columns - 1) // columns
    caption = label_height if labels else 0
    sheet = Image.new("RGB", (columns * w, rows * (h + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, tile in enumerate(tiles):
        x, y = (i % columns) * w, (i // columns) * (h + caption)
        sheet.paste(tile.resize((w, h)), (x, y))
        if labels:
            draw.text((x + 4, y + h + 3), labels[i], fill="black", font=font)
    return sheet


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PNG atomically."""
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


PLOT_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def nice_ticks(lo: float, hi: float, count: int = 5) -> tuple[list[float], int]:
    """Round tick values covering [lo, hi]: a step of 1, 2, 2.5 or 5 x 10^k giving about ``count``
    ticks, the first at or below lo and the last at or above hi. Returns (ticks, decimals to print)."""
    if not hi > lo:
        lo, hi = lo - 1.0, hi + 1.0
    raw = (hi - lo) / max(count - 1, 1)
    power = math.floor(math.log10(raw))
    step = next(m * 10.0 ** power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * 10.0 ** power >= raw * (1 - 1e-9))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    ticks = [round(k * step, 12) for k in range(first, last + 1)]
    mantissa = step / 10.0 ** math.floor(math.log10(step))
    decimals = max(0, -math.floor(math.log10(step)) + (1 if abs(mantissa - 2.5) < 1e-9 else 0))
    return ticks, decimals


LEGEND_WIDTH = 190  # px to the right of the plot area: the legend never covers the data


def _frame(size: tuple[int, int], xs: list[float], ys: list[float], title: str, xlabel: str, ylabel: str,
           xpad: float = 0.0, ypad: float = 0.05, x_from_zero: bool = False, legend: bool = False):
    """White canvas with a framed plot area whose axes end on round ticks (:func:`nice_ticks`) around
    the points; with ``legend`` the plot area leaves :data:`LEGEND_WIDTH` free on the right.
    Returns (image, draw, font, px, legend_x)."""
    w, h = size
    left, right, top, bottom = 70, 30 + (LEGEND_WIDTH if legend else 0), 30, 50
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    dx = (x1 - x0) * xpad
    dy = (y1 - y0) * ypad or max(abs(y0) * 0.05, 1e-3)  # a flat line still gets a y range
    x0 = max(x0 - dx, 0.0) if (x_from_zero and x0 >= 0) else x0 - dx
    x1, y0, y1 = x1 + dx, y0 - dy, y1 + dy
    xt, xdec = nice_ticks(x0, x1)
    yt, ydec = nice_ticks(y0, y1)
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()

    def px(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) / (x1 - x0) * (w - left - right), top + (y1 - y) / (y1 - y0) * (h - top - bottom)

    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for yv in yt:
        _, yy = px(x0, yv)
        d.line([left - 4, yy, left, yy], fill="black")
        d.text((4, yy - 6), f"{yv:.{ydec}f}", fill="black", font=font)
    for xv in xt:
        xx, _ = px(xv, y0)
        d.line([xx, h - bottom, xx, h - bottom + 4], fill="black")
        d.text((xx - 10, h - bottom + 6), f"{xv:.{xdec}f}", fill="black", font=font)
    d.text((w / 2 - 3 * len(xlabel), h - 18), xlabel, fill="black", font=font)
    d.text((left, 8), f"{title}    {ylabel}" if ylabel else title, fill="black", font=font)
    return img, d, font, px, w - right + 10


def line_plot(series: dict[str, list[tuple[float, float]]], title: str = "", xlabel: str = "", ylabel: str = "",
              size: tuple[int, int] = (640, 400), bands: dict[str, list[tuple[float, float, float]]] | None = None) -> Image.Image:
    """A small line chart: ``series`` maps a legend label to (x, y) points; ``bands`` (optional) maps
    a label to (x, low, high) points drawn as a shaded range behind its line.

    Drawn with PIL rather than matplotlib so the engine (and the Blender worker, whose wheels ship
    inside the extension package) stays free of a plotting dependency for the two chart types it
    needs (this and :func:`scatter_plot`); axes end on round ticks and the legend sits beside the
    plot area, never on the data.
    """
    pts = [p for s in series.values() for p in s] + [(x, y) for b in (bands or {}).values() for x, lo, hi in b for y in (lo, hi)]
    finite = [(x, y) for x, y in pts if np.isfinite(x) and np.isfinite(y)]
    if not finite:
        raise ValueError("line_plot needs at least one finite point")
    img, d, font, px, legend_x = _frame(size, [p[0] for p in finite], [p[1] for p in finite], title, xlabel, ylabel, legend=True)
    for i, (label, points) in enumerate(series.items()):
        colour = PLOT_COLOURS[i % len(PLOT_COLOURS)]
        band = (bands or {}).get(label)
        if band:
            poly = [px(x, hi) for x, _, hi in band] + [px(x, lo) for x, lo, _ in reversed(band)]
            rgb = tuple(int(colour[j:j + 2], 16) for j in (1, 3, 5))
            d.polygon(poly, fill=tuple(int(255 - (255 - c) * 0.25) for c in rgb))
        line = [px(x, y) for x, y in points if np.isfinite(x) and np.isfinite(y)]
        if len(line) > 1:
            d.line(line, fill=colour, width=2)
        elif line:
            d.ellipse([line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2], fill=colour)
        d.text((legend_x, 36 + 14 * i), f"- {label}", fill=colour, font=font)
    return img


def scatter_plot(points: dict[str, tuple[float, float]], title: str = "", xlabel: str = "", ylabel: str = "",
                 size: tuple[int, int] = (640, 400), colours: dict[str, str] | None = None,
                 x_from_zero: bool = False) -> Image.Image:
    """Labelled points: ``points`` maps a label to (x, y); ``colours`` maps a label to "#rrggbb"
    (others take PLOT_COLOURS in order). ``x_from_zero``: do not pad the x axis below 0."""
    finite = {k: v for k, v in points.items() if all(np.isfinite(c) for c in v)}
    if not finite:
        raise ValueError("scatter_plot needs at least one finite point")
    xs, ys = [p[0] for p in finite.values()], [p[1] for p in finite.values()]
    img, d, font, px, _ = _frame(size, xs, ys, title, xlabel, ylabel, xpad=0.1, ypad=0.1, x_from_zero=x_from_zero)
    for i, (label, (x, y)) in enumerate(finite.items()):
        colour = (colours or {}).get(label, PLOT_COLOURS[i % len(PLOT_COLOURS)])
        cx, cy = px(x, y)
        d.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], fill=colour, outline="black")
        d.text((cx + 8, cy - 6), label, fill=colour, font=font)
    return img
