"""Appearance rewards an artist can steer: match a colour palette."""
from __future__ import annotations

import torch

from ..render.types import RenderOutput
from .base import Reward


class PaletteReward(Reward):
    """Negative mean distance from each foreground pixel's albedo to its nearest palette colour.

    ``palette`` is a list of sRGB colours in [0, 1]. The nearest colour is a soft minimum
    (temperature ``softness``) so every palette entry receives gradient. Range: [-sqrt(3), 0].
    """

    channels = frozenset({"albedo", "alpha"})

    name = "palette"

    def __init__(self, palette: list[tuple[float, float, float]], softness: float = 0.05, alpha_threshold: float = 0.5):
        colours = torch.as_tensor(palette, dtype=torch.float32)
        if colours.dim() != 2 or colours.shape[1] != 3 or len(colours) == 0:
            raise ValueError("palette must be a non-empty list of (r, g, b) colours")
        if (colours < 0).any() or (colours > 1).any():
            raise ValueError("palette colours must lie in [0, 1]")
        if not softness > 0:
            raise ValueError(f"softness must be > 0, got {softness!r}")
        if not 0.0 <= alpha_threshold < 1.0:
            raise ValueError(f"alpha_threshold must be in [0, 1), got {alpha_threshold!r}")
        self.palette = colours
        self.softness = softness
        self.alpha_threshold = alpha_threshold

    def score_views(self, renders: RenderOutput, prompts: list[str]) -> torch.Tensor:
        albedo = renders.albedo.permute(0, 1, 3, 4, 2)  # (B, V, R, R, 3), premultiplied by alpha
        alpha = renders.alpha[:, :, 0]
        colour = albedo / alpha[..., None].clamp_min(1e-6)
        palette = self.palette.to(colour.device, colour.dtype)
        dist = (colour[..., None, :] - palette).pow(2).sum(-1).add(1e-12).sqrt()  # (B, V, R, R, K)
        nearest = -self.softness * torch.logsumexp(-dist / self.softness, dim=-1)
        m = (alpha > self.alpha_threshold).to(colour.dtype)
        return -(nearest * m).sum((-1, -2)) / m.sum((-1, -2)).clamp_min(1.0)


# sRGB (linear) -> LMS -> Oklab (Björn Ottosson, 2020): a perceptually uniform-ish colour space in
# which Euclidean distances track perceived colour differences far better than in sRGB.
_LINEAR_TO_LMS = torch.tensor(
    [[0.4122214708, 0.5363325363, 0.0514459929], [0.2119034982, 0.6806995451, 0.1073969566], [0.0883024619, 0.2817188376, 0.6299787005]]
)
_LMS_TO_OKLAB = torch.tensor(
    [[0.2104542553, 0.7936177850, -0.0040720468], [1.9779984951, -2.4285922050, 0.4505937099], [0.0259040371, 0.7827717662, -0.8086757660]]
)
# Oklab extent of the sRGB gamut: L in [0, 1], a in [-0.234, 0.276], b in [-0.312, 0.199].
_OKLAB_RANGE = ((0.0, 1.0), (-0.32, 0.32), (-0.32, 0.32))


def srgb_to_oklab(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3) sRGB in [0, 1] -> (..., 3) Oklab (L in [0, 1], a and b about [-0.3, 0.3]); differentiable."""
    c = rgb.clamp(0.0, 1.0)
    linear = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055).pow(2.4))
    lms = linear @ _LINEAR_TO_LMS.to(rgb.device, rgb.dtype).T
    # The cube root's slope is infinite at 0; a floor keeps gradients finite on pure black.
    return lms.clamp_min(1e-6).pow(1.0 / 3.0) @ _LMS_TO_OKLAB.to(rgb.device, rgb.dtype).T


def soft_colour_histogram(lab: torch.Tensor, weight: torch.Tensor, bins: int, softness: float) -> torch.Tensor:
    """Soft 3D histogram of Oklab colours, normalised to sum 1 (all zeros if ``weight`` sums to 0).

    ``lab`` (N, P, 3), ``weight`` (N, P) -> (N, bins**3). Each colour spreads over the bins with a
    separable Gaussian kernel of width ``softness`` bin spacings, normalised per axis so every pixel
    contributes exactly its weight; the histogram is smooth in the colours, hence differentiable.
    """
    kernels = []
    for axis, (lo, hi) in enumerate(_OKLAB_RANGE):
        centres = torch.linspace(lo, hi, bins, device=lab.device, dtype=lab.dtype)
        sigma = softness * (hi - lo) / (bins - 1)
        k = torch.softmax(-0.5 * ((lab[..., axis, None] - centres) / sigma) ** 2, dim=-1)  # (N, P, bins)
        kernels.append(k)
    hist = torch.einsum("np,npi,npj,npk->nijk", weight, *kernels).reshape(lab.shape[0], -1)
    return hist / hist.sum(-1, keepdim=True).clamp_min(1e-12)


def load_reference_image(image, max_side: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """A reference image -> (rgb (3, H, W) float32 sRGB in [0, 1], weight (H, W) in [0, 1]).

    ``image`` is a file path (anything PIL opens; its alpha channel, if any, becomes the weight) or
    a float array/tensor in [0, 1] shaped (3, H, W), (4, H, W), (H, W, 3) or (H, W, 4) (uint8 arrays
    are divided by 255). A fourth channel is alpha: transparent pixels do not count. Images larger
    than ``max_side`` are downsampled (alpha-premultiplied, area filter) since colour statistics
    do not need more pixels.
    """
    import os
    import warnings

    import numpy as np

    if isinstance(image, (str, os.PathLike)):
        from PIL import Image, UnidentifiedImageError

        try:
            with warnings.catch_warnings():
                # PIL only warns between MAX_IMAGE_PIXELS and twice that: refuse those too, before
                # the pixels are decoded into memory
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(image) as im:
                    has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
                    arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
        except FileNotFoundError:
            raise ValueError(f"reference image not found: {image}") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ValueError(f"reference image {image} is too large to read safely (a decompression bomb? "
                             f"{exc}); use a smaller image") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"cannot read reference image {image}: {exc}") from exc
        tensor = torch.from_numpy(arr)
    elif isinstance(image, (torch.Tensor, np.ndarray)):
        tensor = torch.as_tensor(image).detach().cpu()
        if tensor.dtype == torch.uint8:
            tensor = tensor.float() / 255.0
        elif not tensor.is_floating_point():
            raise ValueError(f"reference image must be a float array in [0, 1] or uint8, got dtype {tensor.dtype}")
        tensor = tensor.float()
    else:
        raise ValueError(f"reference image must be a file path, a numpy array or a torch tensor, got {type(image).__name__}")

    if tensor.dim() != 3:
        raise ValueError(f"reference image must have shape (3|4, H, W) or (H, W, 3|4), got {tuple(tensor.shape)}")
    if tensor.shape[-1] in (3, 4):
        tensor = tensor.permute(2, 0, 1)
    elif tensor.shape[0] not in (3, 4):
        raise ValueError(f"reference image must have shape (3|4, H, W) or (H, W, 3|4), got {tuple(tensor.shape)}")
    if tensor.shape[1] < 1 or tensor.shape[2] < 1:
        raise ValueError(f"reference image is empty: shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all() or tensor.min() < 0.0 or tensor.max() > 1.0:
        raise ValueError("reference image values must be finite and lie in [0, 1]")
    rgb = tensor[:3]
    weight = tensor[3] if tensor.shape[0] == 4 else torch.ones_like(tensor[0])
    h, w = weight.shape
    if max(h, w) > max_side:
        size = (max(1, round(h * max_side / max(h, w))), max(1, round(w * max_side / max(h, w))))
        premul = torch.cat([rgb * weight, weight[None]])[None]
        small = torch.nn.functional.interpolate(premul, size=size, mode="area")[0]
        weight = small[3]
        rgb = (small[:3] / weight.clamp_min(1e-6)).clamp(0.0, 1.0)
    if weight.sum() <= 0:
        raise ValueError("reference image has no opaque pixels (its alpha channel is zero everywhere)")
    return rgb.contiguous(), weight.contiguous()


class ReferenceImageReward(Reward):
    """How closely the rendered albedo's colour distribution matches a reference image's.

    Both are summarised as soft 3D colour histograms in Oklab (``bins`` per axis, Gaussian kernels
    ``softness`` bins wide): the render's over foreground pixels weighted by alpha (albedo is
    un-premultiplied first), the reference's over its pixels weighted by its alpha channel. The
    per-view score is the Bhattacharyya coefficient ``sum_i sqrt(p_i q_i)`` in [0, 1]: 1 when the
    distributions agree, 0 when they share no colour (and for a view with no foreground).
    Differentiable w.r.t. albedo and alpha; unlike :class:`PaletteReward` it also rewards using the
    reference's colours in its proportions (a red-and-blue reference does not reward purple).
    """

    name = "reference"
    channels = frozenset({"albedo", "alpha"})

    def __init__(self, image, bins: int = 8, softness: float = 1.0):
        if not isinstance(bins, int) or bins < 2:
            raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
        if not softness > 0:
            raise ValueError(f"softness must be > 0 (bin spacings), got {softness!r}")
        self.bins, self.softness = bins, float(softness)
        rgb, weight = load_reference_image(image)
        lab = srgb_to_oklab(rgb.permute(1, 2, 0).reshape(1, -1, 3))
        self.reference_histogram = soft_colour_histogram(lab, weight.reshape(1, -1), bins, self.softness)[0]  # (bins^3,)

    def score_views(self, renders: RenderOutput, prompts: list[str]) -> torch.Tensor:
        b, v = renders.albedo.shape[:2]
        alpha = renders.alpha[:, :, 0].reshape(b * v, -1)  # (B*V, R*R)
        albedo = renders.albedo.permute(0, 1, 3, 4, 2).reshape(b * v, -1, 3)  # premultiplied by alpha
        colour = albedo / alpha[..., None].clamp_min(1e-6)
        hist = soft_colour_histogram(srgb_to_oklab(colour), alpha, self.bins, self.softness)
        ref = self.reference_histogram.to(hist.device, hist.dtype)
        # The epsilon keeps the square root's slope finite on empty bins.
        return (hist * ref).add(1e-12).sqrt().sum(-1).view(b, v)
