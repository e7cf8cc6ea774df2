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
