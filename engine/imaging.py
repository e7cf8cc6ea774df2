"""Image utilities: tensors to PIL, titled contact sheets of renders, atomic PNG writes.

Contact sheets are composited with PIL rather than drawn with matplotlib: every tile is pasted at
its rendered size, pixel for pixel (no resampling), any number of tiles costs the same few
milliseconds, and the result is a PIL image the callers save as they like. Charts (curves, scatter
plots, the alignment job's before/after sheet) live in :mod:`engine.plots`.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .fileio import atomic_write

__all__ = ["to_pil", "contact_sheet", "save_png"]


def to_pil(image) -> Image.Image:
    """(3, H, W), (1, H, W) or (4, H, W) (straight RGBA, composited over white) float array/tensor in
    [0, 1] -> RGB PIL image. ValueError on another shape or a non-finite pixel."""
    arr = image.detach().float().cpu().numpy() if hasattr(image, "detach") else np.asarray(image, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[0] not in (1, 3, 4):
        raise ValueError(f"an image must be (3, H, W), (1, H, W) or (4, H, W), got shape {tuple(arr.shape)}")
    if not np.isfinite(arr).all():
        raise ValueError("an image has non-finite pixels")
    if arr.shape[0] == 1:
        arr = np.repeat(arr, 3, 0)
    elif arr.shape[0] == 4:
        alpha = np.clip(arr[3:], 0, 1)
        arr = arr[:3] * alpha + (1 - alpha)
    return Image.fromarray((np.clip(arr.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8))


@functools.lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.ImageFont:
    """DejaVu Sans, the charts' font, from matplotlib's data folder (found without importing it):
    it has the arrows and signs labels use (Pillow's own font draws a box for "\u2192"). Pillow's
    bundled font where matplotlib is missing."""
    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            try:
                return ImageFont.truetype(str(path), size)
            except OSError:  # Pillow without FreeType
                break
    return ImageFont.load_default(size=size)


def _cut(text: str, font, width: float) -> str:
    """``text`` shortened to fit ``width`` pixels, ending in an ellipsis when anything was cut."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text.rstrip() + "…"


def _fit_lines(text: str, font, width: float, max_lines: int) -> list[str]:
    """``text`` broken at spaces into at most ``max_lines`` lines no wider than ``width`` pixels; what
    does not fit ends the last line with an ellipsis (a word longer than a line is cut there)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] += " …"
    return [_cut(line, font, width) for line in lines]


def contact_sheet(images: list, labels: list[str] | None = None, columns: int = 4, title: str | None = None,
                  gap: int = 6) -> Image.Image:
    """A titled grid of images with a caption under each.

    ``images``: (C, H, W) arrays/tensors in [0, 1] or PIL images; tiles take the first one's size and
    are pasted at that size. ``labels``: one caption per image, wrapped to the tile's width (two lines
    at most, then an ellipsis). ``title``: a band above the grid, wrapped to the sheet's width.
    ``gap``: white pixels around and between tiles. Returns an RGB PIL image. ValueError on no
    images, a label count that differs from the image count, or ``columns`` < 1.
    """
    tiles = [im.convert("RGB") if isinstance(im, Image.Image) else to_pil(im) for im in images]
    if not tiles:
        raise ValueError("contact_sheet needs at least one image")
    if labels is not None and len(labels) != len(tiles):
        raise ValueError(f"contact_sheet got {len(tiles)} images but {len(labels)} labels")
    if not isinstance(columns, int) or columns < 1:
        raise ValueError(f"contact_sheet: columns must be an integer >= 1, got {columns!r}")
    columns = min(columns, len(tiles))
    w, h = tiles[0].size
    rows = (len(tiles) + columns - 1) // columns
    label_font = _font(max(11, min(14, w // 10)))
    line_h = label_font.getbbox("Ag")[3] + 3
    wrapped = [_fit_lines(str(l), label_font, w - 2, 2) for l in labels] if labels else []
    caption_h = (max(len(l) for l in wrapped) * line_h + 4) if wrapped else 0
    width = columns * w + (columns + 1) * gap
    title_font = _font(max(12, min(18, width // 40)))
    title_lines = _fit_lines(title, title_font, width - 2 * gap, 4) if title else []
    title_line_h = title_font.getbbox("Ag")[3] + 4
    title_h = len(title_lines) * title_line_h + gap if title_lines else 0
    height = title_h + rows * (h + caption_h) + (rows + 1) * gap
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for k, line in enumerate(title_lines):
        draw.text((gap, gap + k * title_line_h), line, fill="black", font=title_font)
    for i, tile in enumerate(tiles):
        x = gap + (i % columns) * (w + gap)
        y = title_h + gap + (i // columns) * (h + caption_h + gap)
        sheet.paste(tile if tile.size == (w, h) else tile.resize((w, h)), (x, y))
        draw.rectangle((x - 1, y - 1, x + w, y + h), outline=(205, 205, 205))  # renders on white need an edge
        for k, line in enumerate(wrapped[i] if wrapped else []):
            draw.text((x + 1, y + h + 2 + k * line_h), line, fill=(30, 30, 30), font=label_font)
    return sheet


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PNG atomically."""
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
