"""Contact sheets: titled, every tile pasted pixel for pixel, captions that fit under their tile."""
import numpy as np
import pytest
import torch
from PIL import Image

from engine.imaging import contact_sheet, save_png, to_pil


def _tile(rgb, size=64):
    return torch.tensor(rgb, dtype=torch.float32)[:, None, None].expand(3, size, size).clone()


def _rows_with_ink(img: np.ndarray, x0: int, x1: int) -> np.ndarray:
    """Row indices in columns [x0, x1) holding dark (text) pixels."""
    return np.flatnonzero((img[:, x0:x1] < 100).all(-1).any(1))


def test_sheet_has_a_title_band_and_tiles_at_their_own_size(tmp_path):
    tiles = [_tile((1.0, 0.0, 0.0)), _tile((0.0, 0.0, 1.0)), _tile((0.0, 1.0, 0.0))]
    plain = contact_sheet(tiles, columns=3)
    titled = contact_sheet(tiles, labels=["red", "blue", "green"], columns=3, title="Three tiles")
    assert plain.size[0] == titled.size[0] >= 3 * 64 and titled.size[1] > plain.size[1] >= 64
    path = save_png(titled, tmp_path / "sheet.png")
    with Image.open(path) as img:
        arr = np.asarray(img.convert("RGB"))
    assert img.size == titled.size and arr.std() > 20  # not blank
    # each tile is there, whole and unresampled: find the red one's 64x64 block exactly
    red = (arr == (255, 0, 0)).all(-1)
    ys, xs = np.nonzero(red)
    assert red.sum() == 64 * 64 and np.ptp(ys) == np.ptp(xs) == 63
    # the title's ink sits above the first tile, the red caption's below it
    ink = _rows_with_ink(arr, xs.min(), xs.max() + 1)
    assert ink.min() < ys.min() and ink.max() > ys.max()
    assert _rows_with_ink(np.asarray(plain), 0, plain.size[0]).size == 0  # no title, no labels: no text


def test_long_labels_wrap_within_their_tile_and_the_title_within_the_sheet():
    tiles = [_tile((1.0, 1.0, 1.0)) for _ in range(2)]  # white tiles: only text is dark
    long = "a very long caption that cannot fit on one line under a tile of sixty-four pixels at all"
    sheet = np.asarray(contact_sheet(tiles, labels=[long, "b"], columns=2, title="t " * 200))
    first_tile_right = 6 + 64  # gap + tile width
    caption_rows = slice(sheet.shape[0] - 60, sheet.shape[0])
    dark = (sheet[caption_rows] < 100).all(-1)
    assert dark[:, :first_tile_right + 1].any()
    assert not dark[:, first_tile_right + 1:first_tile_right + 6].any()  # no caption runs into the gutter
    assert sheet.shape[0] < 64 + 200  # the long title is cut to a few lines, not 200


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        contact_sheet([])
    with pytest.raises(ValueError, match="labels"):
        contact_sheet([_tile((1, 0, 0))], labels=["a", "b"])
    with pytest.raises(ValueError, match="columns"):
        contact_sheet([_tile((1, 0, 0))], columns=0)
    with pytest.raises(ValueError, match="non-finite"):
        to_pil(torch.full((3, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        to_pil(torch.zeros(4, 4))


def test_rgba_renders_are_composited_over_white():
    rgba = torch.zeros(4, 2, 2)
    rgba[0, 0, 0] = rgba[3, 0, 0] = 1.0  # one opaque red pixel, the rest transparent
    assert np.asarray(to_pil(rgba)).tolist() == [[[255, 0, 0], [255, 255, 255]], [[255, 255, 255], [255, 255, 255]]]


def test_pil_tiles_and_grey_images_are_accepted():
    sheet = contact_sheet([Image.new("RGBA", (32, 32), (0, 255, 0, 255)), torch.ones(1, 32, 32) * 0.5], columns=1)
    arr = np.asarray(sheet)
    assert sheet.mode == "RGB" and ((arr == (0, 255, 0)).all(-1)).sum() == 32 * 32
    assert ((arr == (128, 128, 128)).all(-1)).sum() == 32 * 32
