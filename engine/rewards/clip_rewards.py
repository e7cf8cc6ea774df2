"""The paper's image reward models, loaded with transformers (no open_clip, no torchvision).

- ``aesthetic``: LAION aesthetic predictor v2. The CLIP ViT-L/14 image embedding (transformers
  ``openai/clip-vit-large-patch14``), L2-normalised, through the linear MLP head
  768 -> 1024 -> 128 -> 64 -> 16 -> 1 of ``sac+logos+ava1-l14-linearMSE.pth`` (state dict keys
  ``layers.{0,2,4,6,7}.{weight,bias}``; dropouts between, no activations). Score: roughly 1-10.
- ``hpsv2``: HPSv2.1, an OpenCLIP ViT-H-14 finetuned on human preferences. Score: cosine of the
  image and prompt embeddings (about 0.2-0.35 for typical images). transformers cannot read the
  OpenCLIP checkpoint directly; convert it once (no open_clip needed)::

      hf download xswu/HPSv2 HPS_v2.1_compressed.pt --local-dir weights
      hf download laion/CLIP-ViT-H-14-laion2B-s32B-b79K --include "*.json" "*.txt" --local-dir weights/vit-h-14
      python -m engine.rewards.convert_open_clip weights/HPS_v2.1_compressed.pt --base weights/vit-h-14 --out weights/hpsv2.1

  and pass ``model_path=weights/hpsv2.1`` (``engine/rewards/convert_open_clip.py``).
- ``pickscore``: PickScore v1 (``yuvalkirstain/PickScore_v1``, transformers format; its tokenizer
  and image processor are ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``'s). Score:
  ``logit_scale.exp() * cosine`` (about 18-23).
- ``clip-score``: any transformers ``CLIPModel`` (default ``openai/clip-vit-large-patch14``).
  Score: cosine of image and prompt embeddings in [-1, 1] (the paper's CLIP-sim is 100x this).

Loading never touches the network: ``model_path`` is a local directory, or a Hugging Face repo id
looked up in the local hub cache (``huggingface_hub`` with ``local_files_only=True``); a file such as
the aesthetic head is a local path or ``"<repo id>:<file name>"`` in the hub cache. Anything
missing raises :class:`RewardModelMissing` naming it and the command that fetches it.

Images stay torch tensors end to end so gradients reach the renderer: the reward takes the
renderer's ``rgb`` (B, V, 3, R, R) in [0, 1] (shaded, already composited over the renderer's
background, white by default), resizes it to the model's input size (224 for the real models) with
bicubic ``F.interpolate`` (antialiased, shortest side then centre crop, as CLIP's processor does),
and normalises with CLIP's mean and std. Only the prompts go through the tokenizer; prompt
embeddings are cached per prompt string. Models run in float32, frozen, in eval mode, and follow
the renders to their device on first use.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..render.types import RenderOutput
from .base import Reward
from .errors import RewardConfigError, RewardModelMissing

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

DEFAULT_AESTHETIC_CLIP = "openai/clip-vit-large-patch14"
DEFAULT_AESTHETIC_HEAD = "camenduru/improved-aesthetic-predictor:sac+logos+ava1-l14-linearMSE.pth"
DEFAULT_PICKSCORE = "yuvalkirstain/PickScore_v1"
DEFAULT_PICKSCORE_TOKENIZER = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
DEFAULT_CLIP_SCORE = "openai/clip-vit-large-patch14"
HPSV2_CONVERSION_HINT = (
    "HPSv2.1 ships as an OpenCLIP checkpoint; convert it once with "
    "`python -m engine.rewards.convert_open_clip HPS_v2.1_compressed.pt --base <laion/CLIP-ViT-H-14-laion2B-s32B-b79K dir> --out <dir>` "
    "(see engine/rewards/clip_rewards.py) and pass that directory as model_path"
)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TEXT_CACHE_LIMIT = 4096


def _download_hint(repo_id: str, filename: str | None = None) -> str:
    what = f"{repo_id} {filename}" if filename else repo_id
    return f"fetch it on a machine with network with `hf download {what}` (it lands in the Hugging Face cache, which is what is searched)"


def resolve_model_dir(ref: str | os.PathLike, what: str) -> Path:
    """A local directory, or a repo id in the local Hugging Face cache -> the directory holding its files."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    text = str(ref)
    if path.exists():
        raise RewardModelMissing(f"{what}: {path} is a file; expected a model directory (config.json, weights, tokenizer)")
    if not _REPO_ID.match(text):
        raise RewardModelMissing(f"{what}: no model directory at {path} (give a local directory or a Hugging Face repo id)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, local_files_only=True))
    except Exception as exc:  # LocalEntryNotFoundError, bad cache layouts, ...: all mean "not here"
        raise RewardModelMissing(
            f"{what}: {text} is neither a local directory nor in the Hugging Face cache; {_download_hint(text)}, "
            "or pass model_path=<local directory>"
        ) from exc


def resolve_file(ref: str | os.PathLike, what: str) -> Path:
    """A local file path, or ``"<repo id>:<file name>"`` in the local Hugging Face cache -> its path."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    text = str(ref)
    repo_id, sep, filename = text.partition(":")
    if not sep or not _REPO_ID.match(repo_id) or not filename:
        raise RewardModelMissing(f"{what}: no file at {path} (give a local file or '<repo id>:<file name>')")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, local_files_only=True))
    except Exception as exc:
        raise RewardModelMissing(
            f"{what}: {filename} of {repo_id} is not in the Hugging Face cache; {_download_hint(repo_id, filename)}, "
            "or pass a local file"
        ) from exc


def _load_pretrained(cls, directory: Path, what: str, **kwargs) -> nn.Module:
    try:
        model = cls.from_pretrained(directory, local_files_only=True, dtype=torch.float32, **kwargs)
    except (OSError, ValueError) as exc:
        raise RewardModelMissing(f"{what}: cannot load a {cls.__name__} from {directory}: {exc}") from exc
    return model.eval().requires_grad_(False)


def _load_vision_tower(directory: Path, what: str) -> nn.Module:
    """Only the image tower + projection of a CLIPModel checkpoint (the text tower is not needed)."""
    from transformers import CLIPConfig, CLIPVisionModelWithProjection
    from transformers.utils import logging as hf_logging

    try:
        config = CLIPConfig.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise RewardModelMissing(f"{what}: no CLIP config.json in {directory}: {exc}") from exc
    vision = config.vision_config
    # The projection size lives on the CLIPConfig, not on its vision part (which defaults to 512).
    vision.projection_dim = config.projection_dim
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the skipped text-tower weights are expected, not worth a report
    try:
        return _load_pretrained(CLIPVisionModelWithProjection, directory, what, config=vision)
    finally:
        hf_logging.set_verbosity(level)


def _has_tokenizer(directory: Path) -> bool:
    return (directory / "tokenizer.json").is_file() or ((directory / "vocab.json").is_file() and (directory / "merges.txt").is_file())


def _load_tokenizer(directory: Path, what: str, vocab_size: int):
    from transformers import CLIPTokenizer

    # transformers 5 builds an empty two-token tokenizer from a directory without tokenizer files
    # instead of failing, which would silently score every prompt the same: check first.
    if not _has_tokenizer(directory):
        raise RewardModelMissing(f"{what}: no CLIP tokenizer in {directory} (tokenizer.json or vocab.json + merges.txt; give tokenizer_path)")
    try:
        tokenizer = CLIPTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise RewardModelMissing(f"{what}: cannot load the CLIP tokenizer in {directory}: {exc}") from exc
    if len(tokenizer) > vocab_size:
        raise RewardConfigError(
            f"{what}: the tokenizer in {directory} has {len(tokenizer)} tokens but the model only {vocab_size}; "
            "it belongs to another model"
        )
    return tokenizer


def _mean_std(directory: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """CLIP mean/std from the model's preprocessor_config.json if it has one, else OpenAI CLIP's."""
    cfg = directory / "preprocessor_config.json"
    if cfg.is_file():
        data = json.loads(cfg.read_text())
        mean, std = data.get("image_mean"), data.get("image_std")
        if isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 3:
            return tuple(map(float, mean)), tuple(map(float, std))
    return OPENAI_CLIP_MEAN, OPENAI_CLIP_STD


def clip_pixel_values(images: torch.Tensor, size: int, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> CLIP input (N, 3, size, size), differentiably.

    Like CLIP's image processor: bicubic resize of the shortest side to ``size`` (antialiased when
    shrinking), centre crop, then ``(x - mean) / std``. No clamping, so saturated pixels keep
    their gradient.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (N, 3, H, W), got {tuple(images.shape)}")
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(images, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = x[..., top : top + size, left : left + size]
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def image_embeddings(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Projected (not normalised) image embeddings (N, projection_dim) of a CLIPModel or CLIPVisionModelWithProjection.

    Calls the vision tower and the projection explicitly: ``get_image_features`` returns a tensor
    in transformers 4.x but an output object in 5.x, while the tower's ``pooler_output`` (pooled
    class token after the final layer norm) and ``visual_projection`` are the same in both.
    """
    pooled = model.vision_model(pixel_values=pixel_values).pooler_output
    return model.visual_projection(pooled)


def text_embeddings(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Projected (not normalised) text embeddings (N, projection_dim) of a CLIPModel; see :func:`image_embeddings`."""
    pooled = model.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
    return model.text_projection(pooled)


def _flatten_views(renders: RenderOutput) -> torch.Tensor:
    b, v = renders.rgb.shape[:2]
    return renders.rgb.reshape(b * v, *renders.rgb.shape[2:])


class AestheticHead(nn.Module):
    """The LAION aesthetic predictor v2 MLP: 768 -> 1024 -> 128 -> 64 -> 16 -> 1, no activations."""

    def __init__(self, in_features: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_features, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        """(N, in_features) L2-normalised CLIP image embeddings -> (N,) scores."""
        return self.layers(embeds)[:, 0]


def load_aesthetic_head(path: Path) -> AestheticHead:
    """Read the head's state dict (``.pth`` with ``torch.load(weights_only=True)`` or ``.safetensors``)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RewardConfigError(f"aesthetic head {path} is not a readable state dict: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    expected = {f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")}
    if not isinstance(state, dict) or set(state) != expected:
        got = sorted(state)[:12] if isinstance(state, dict) else type(state).__name__
        raise RewardConfigError(f"aesthetic head {path}: expected keys {sorted(expected)}, got {got}")
    head = AestheticHead(in_features=state["layers.0.weight"].shape[1])
    try:
        head.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as exc:
        raise RewardConfigError(f"aesthetic head {path} has the wrong layer sizes: {exc}") from exc
    return head.eval().requires_grad_(False)


class AestheticReward(Reward):
    """LAION aesthetic predictor v2 on each rendered view: (B, V) scores, roughly 1 (poor) to 10."""

    name = "aesthetic"

    def __init__(self, vision_model: nn.Module, head: AestheticHead, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD):
        dim = vision_model.visual_projection.out_features
        if head.layers[0].in_features != dim:
            raise RewardConfigError(
                f"aesthetic head expects {head.layers[0].in_features}-d embeddings but the CLIP model gives {dim}-d "
                "(the head belongs to CLIP ViT-L/14)"
            )
        self.model, self.head = vision_model, head
        self.size = int(vision_model.config.image_size)
        self.mean, self.std = mean, std

    def score_views(self, renders: RenderOutput, prompts: list[str]) -> torch.Tensor:
        images = _flatten_views(renders)
        self.model.to(images.device)
        self.head.to(images.device)
        pixels = clip_pixel_values(images.float(), self.size, self.mean, self.std)
        embeds = F.normalize(image_embeddings(self.model, pixels), dim=-1)
        return self.head(embeds).view(renders.rgb.shape[:2])


class ClipTextImageReward(Reward):
    """Prompt-image agreement of a CLIP model on each rendered view: (B, V) scores.

    ``score = scale * cosine(image embedding, prompt embedding)`` with ``scale`` 1 (HPSv2, CLIP
    score) or the model's ``logit_scale.exp()`` when ``use_logit_scale`` (PickScore).
    """

    def __init__(self, model: nn.Module, tokenizer, name: str, use_logit_scale: bool = False, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.use_logit_scale = use_logit_scale
        self.size = int(model.config.vision_config.image_size)
        self.max_length = int(model.config.text_config.max_position_embeddings)
        self.mean, self.std = mean, std
        self._text_cache: dict[str, torch.Tensor] = {}

    def prompt_embeddings(self, prompts: list[str], device: torch.device) -> torch.Tensor:
        """(len(prompts), D) L2-normalised prompt embeddings, constants (no gradient), cached per prompt."""
        new = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if new:
            if len(self._text_cache) + len(new) > _TEXT_CACHE_LIMIT:
                self._text_cache.clear()
            tokens = self.tokenizer(new, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            with torch.no_grad():
                emb = text_embeddings(self.model, tokens["input_ids"].to(device), tokens["attention_mask"].to(device))
            for p, e in zip(new, F.normalize(emb, dim=-1)):
                self._text_cache[p] = e
        return torch.stack([self._text_cache[p].to(device) for p in prompts])

    def score_views(self, renders: RenderOutput, prompts: list[str]) -> torch.Tensor:
        b, v = renders.rgb.shape[:2]
        images = _flatten_views(renders)
        if next(self.model.parameters()).device != images.device:
            self.model.to(images.device)
            self._text_cache.clear()
        pixels = clip_pixel_values(images.float(), self.size, self.mean, self.std)
        img = F.normalize(image_embeddings(self.model, pixels), dim=-1).view(b, v, -1)
        txt = self.prompt_embeddings(list(prompts), images.device)  # (B, D)
        cosine = (img * txt[:, None]).sum(-1)
        return cosine * self.model.logit_scale.exp() if self.use_logit_scale else cosine


def load_aesthetic(model_path: str = DEFAULT_AESTHETIC_CLIP, head_path: str = DEFAULT_AESTHETIC_HEAD) -> AestheticReward:
    """LAION aesthetic v2: CLIP image tower from ``model_path``, MLP head from ``head_path``."""
    what = "aesthetic reward (CLIP ViT-L/14)"
    directory = resolve_model_dir(model_path, what)
    head = load_aesthetic_head(resolve_file(head_path, "aesthetic reward (MLP head sac+logos+ava1-l14-linearMSE.pth)"))
    mean, std = _mean_std(directory)
    return AestheticReward(_load_vision_tower(directory, what), head, mean, std)


def _load_text_image(model_path, tokenizer_path, what: str, name: str, use_logit_scale: bool, fallback_tokenizer: str | None = None) -> ClipTextImageReward:
    from transformers import CLIPModel

    directory = resolve_model_dir(model_path, what)
    if tokenizer_path is None and not _has_tokenizer(directory) and fallback_tokenizer is not None:
        tokenizer_path = fallback_tokenizer
    tok_dir = directory if tokenizer_path is None else resolve_model_dir(tokenizer_path, f"{what} tokenizer")
    model = _load_pretrained(CLIPModel, directory, what)
    mean, std = _mean_std(directory if (directory / "preprocessor_config.json").is_file() else tok_dir)
    tokenizer = _load_tokenizer(tok_dir, what, int(model.config.text_config.vocab_size))
    return ClipTextImageReward(model, tokenizer, name, use_logit_scale, mean, std)


def load_hpsv2(model_path: str | os.PathLike, tokenizer_path: str | None = None) -> ClipTextImageReward:
    """HPSv2.1 from a transformers-format directory made by ``engine.rewards.convert_open_clip``."""
    if model_path is None or str(model_path) == "":
        raise RewardModelMissing(f"hpsv2 needs model_path: {HPSV2_CONVERSION_HINT}")
    try:
        return _load_text_image(model_path, tokenizer_path, "hpsv2 reward", "hpsv2", use_logit_scale=False)
    except RewardModelMissing as exc:
        raise RewardModelMissing(f"{exc}. {HPSV2_CONVERSION_HINT}") from exc


def load_pickscore(model_path: str = DEFAULT_PICKSCORE, tokenizer_path: str | None = None) -> ClipTextImageReward:
    """PickScore v1. The tokenizer comes from ``tokenizer_path``, else from the model directory if it
    holds one, else from ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` (PickScore's own processor)."""
    return _load_text_image(
        model_path, tokenizer_path, "pickscore reward", "pickscore", use_logit_scale=True, fallback_tokenizer=DEFAULT_PICKSCORE_TOKENIZER
    )


def load_clip_score(model_path: str = DEFAULT_CLIP_SCORE, tokenizer_path: str | None = None) -> ClipTextImageReward:
    """CLIP score (cosine) of any transformers CLIPModel; the tokenizer defaults to the model's own."""
    return _load_text_image(model_path, tokenizer_path, "clip-score reward", "clip-score", use_logit_scale=False)
