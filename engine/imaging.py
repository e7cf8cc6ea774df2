"""Small image utilities: tensors to PIL, labelled contact sheets, atomic PNG writes."""
from __future__ import annotations

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


def _frame(size: tuple[int, int], xs: list[float], ys: list[float], title: str, xlabel: str, ylabel: str,
           xpad: float = 0.0, ypad: float = 0.05, x_from_zero: bool = False):
    """White canvas with a framed, ticked plot area fitted to the points: (image, draw, font, px)."""
    w, h = size
    left, right, top, bottom = 70, 30, 30, 50
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    dx = (x1 - x0) * xpad
    dy = (y1 - y0) * ypad or max(abs(y0) * ypad, 1e-3)
    x0 = max(x0 - dx, 0.0) if (x_from_zero and x0 >= 0) else x0 - dx
    x1, y0, y1 = x1 + dx, y0 - dy, y1 + dy
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()

    def px(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) / (x1 - x0) * (w - left - right), top + (y1 - y) / (y1 - y0) * (h - top - bottom)

    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for i in range(5):
        yv, xv = y0 + (y1 - y0) * i / 4, x0 + (x1 - x0) * i / 4
        _, yy = px(x0, yv)
        xx, _ = px(xv, y0)
        d.line([left - 4, yy, left, yy], fill="black")
        d.text((4, yy - 6), f"{yv:.4g}", fill="black", font=font)
        d.line([xx, h - bottom, xx, h - bottom + 4], fill="black")
        d.text((xx - 10, h - bottom + 6), f"{xv:.4g}", fill="black", font=font)
    d.text((w / 2 - 3 * len(xlabel), h - 18), xlabel, fill="black", font=font)
    d.text((left, 8), f"{title}    {ylabel}" if ylabel else title, fill="black", font=font)
    return img, d, font, px


def line_plot(series: dict[str, list[tuple[float, float]]], title: str = "", xlabel: str = "", ylabel: str = "",
              size: tuple[int, int] = (640, 400), bands: dict[str, list[tuple[float, float, float]]] | None = None) -> Image.Image:
    """A small line chart: ``series`` maps a legend label to (x, y) points; ``bands`` (optional) maps
    a label to (x, low, high) points drawn as a shaded range behind its line.

    Drawn with PIL rather than matplotlib so the engine (and the Blender worker) stays free of a
    plotting dependency for the two chart types it needs (this and :func:`scatter_plot`).
    """
    pts = [p for s in series.values() for p in s] + [(x, y) for b in (bands or {}).values() for x, lo, hi in b for y in (lo, hi)]
    finite = [(x, y) for x, y in pts if np.isfinite(x) and np.isfinite(y)]
    if not finite:
        raise ValueError("line_plot needs at least one finite point")
    img, d, font, px = _frame(size, [p[0] for p in finite], [p[1] for p in finite], title, xlabel, ylabel)
    w = size[0]
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
        d.text((w - 180, 36 + 14 * i), f"- {label}", fill=colour, font=font)
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
    img, d, font, px = _frame(size, xs, ys, title, xlabel, ylabel, xpad=0.1, ypad=0.1, x_from_zero=x_from_zero)
    for i, (label, (x, y)) in enumerate(finite.items()):
        colour = (colours or {}).get(label, PLOT_COLOURS[i % len(PLOT_COLOURS)])
        cx, cy = px(x, y)
        d.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], fill=colour, outline="black")
        d.text((cx + 8, cy - 6), label, fill=colour, font=font)
    return img
