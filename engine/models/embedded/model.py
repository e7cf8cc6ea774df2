"""The embedded default model: the project's own small text-to-3D latent diffusion model.

It implements ``engine.models.protocol.DiffusionModel`` with the parts in this package:
``SlotTextEncoder`` (prompts), ``LatentTransformer3D`` (denoiser, v-prediction), diffusers
schedulers (cosine betas, 1000 training steps) and ``FieldAutoencoder`` (latent -> SDF + colour
field). Weights are trained by ``scripts/train_embedded.py`` and shipped in ``weights/``.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from safetensors.torch import load_file

from .procedural import TRUNCATION
from ...geometry.mesh import Mesh, extract_mesh
from ..fields import SDFGrid
from .. import model_spec
from ..errors import ModelLoadError
from ..prompts import ChecksPrompts
from ..protocol import PromptEmbeds
from ..schedulers import with_float64_alphas
from .autoencoder import AutoencoderConfig, FieldAutoencoder
from .denoiser import DenoiserConfig, LatentTransformer3D
from .text import SlotTextEncoder

WEIGHTS_DIR = Path(__file__).with_name("weights")
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    prediction_type="v_prediction",
    clip_sample=False,
)


@dataclass
class EmbeddedConfig:
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    scaling_factor: float = 1.0  # latents are divided by this before diffusion (unit variance)
    render_resolution: int = 32  # field grid decoded for rendering
    mesh_resolution: int = 48  # field grid decoded for marching cubes

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "EmbeddedConfig":
        """Parse ``config.json``. Every key must be present and known, with a number of the field's
        type: a missing key would silently take a default that does not fit the weights (a wrong
        ``scaling_factor`` gives shapeless samples, not an error). Raises ValueError naming the key."""
        return _strict_config(cls, json.loads(text), "")


def _strict_config(kind, raw, where: str):
    """``kind`` (a dataclass of ints, floats and nested such dataclasses) from the JSON object ``raw``."""
    import dataclasses
    import math
    import typing

    if not isinstance(raw, dict):
        raise ValueError(f"{where or 'the configuration'} must be a JSON object, got {type(raw).__name__}")
    names = [f.name for f in dataclasses.fields(kind)]
    unknown, missing = sorted(set(raw) - set(names)), [n for n in names if n not in raw]
    if unknown or missing:
        problems = ([f"unknown key(s) {', '.join(where + k for k in unknown)}"] if unknown else []) + \
                   ([f"missing key(s) {', '.join(where + k for k in missing)}"] if missing else [])
        raise ValueError("; ".join(problems))
    values = {}
    for name, hint in typing.get_type_hints(kind).items():
        value = raw[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _strict_config(hint, value, f"{where}{name}.")
        elif hint is int and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{where}{name} must be a positive integer, got {value!r}")
        elif hint is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                                or value <= 0):
            raise ValueError(f"{where}{name} must be a positive finite number, got {value!r}")
        else:
            values[name] = value
    return kind(**values)


class EmbeddedModel(ChecksPrompts):
    name = "embedded"
    prediction_type = "v_prediction"
    # Chosen on tuning seeds (scripts/evaluate_embedded.py --first-seed 5000, guidance 2-12):
    # above ~5 colours oversaturate toward their neighbours (blue -> purple) and floaters appear,
    # below ~3 shapes blur toward the unconditional mix. Figures in docs/embedded_guidance_sweep.md.
    default_guidance = 4.0
    lora_target_modules = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_out")
    # The timestep embedder and the AdaLN projection: what the official code also adapts
    # (AlignConfig.lora_conditioning).
    lora_conditioning_modules = ("time_embed.linear_1", "time_embed.linear_2", "t_block.1")
    prompt_rules = model_spec("embedded").prompts  # the registry's: the closed grammar of grammar.py
    # Schedulers whose every transition is a Gaussian of the current state alone, so a trajectory's
    # transitions can be scored and trained one by one (the aligner refuses others).
    training_schedulers = ("ddim", "ddpm", "dpmsolver-sde")

    def __init__(self, config: EmbeddedConfig = EmbeddedConfig(), device: str | torch.device = "cpu"):
        self.config = config
        self.device = torch.device(device)
        self.text_encoder = SlotTextEncoder(config.denoiser.text_dim).to(self.device).eval()
        self.denoiser = LatentTransformer3D(config.denoiser).to(self.device).eval()
        self.autoencoder = FieldAutoencoder(config.autoencoder).to(self.device).eval()
        for module in (self.text_encoder, self.autoencoder):
            module.requires_grad_(False)
        a = config.autoencoder
        self.latent_shape = (a.latent_channels, a.latent_resolution, a.latent_resolution, a.latent_resolution)

    # -- weights -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for prefix, module in (("text.", self.text_encoder), ("denoiser.", self.denoiser), ("autoencoder.", self.autoencoder)):
            out.update({prefix + k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()})
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for prefix, module in (("text.", self.text_encoder), ("denoiser.", self.denoiser), ("autoencoder.", self.autoencoder)):
            part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            try:
                module.load_state_dict(part, strict=True)
            except RuntimeError as exc:
                raise ModelLoadError(f"weights do not match the model configuration ({prefix[:-1]}): {exc}") from exc

    @classmethod
    def load(cls, directory: str | os.PathLike = WEIGHTS_DIR, device: str | torch.device = "cpu") -> "EmbeddedModel":
        """Load ``config.json`` and ``model.safetensors`` from ``directory``."""
        directory = Path(directory)
        cfg_path, weights_path = directory / "config.json", directory / "model.safetensors"
        if not cfg_path.is_file() or not weights_path.is_file():
            raise ModelLoadError(
                f"embedded model weights not found in {directory}; run `python scripts/train_embedded.py` to train them"
            )
        try:
            config = EmbeddedConfig.from_json(cfg_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:  # ValueError: also truncated JSON (JSONDecodeError)
            raise ModelLoadError(f"{cfg_path} is not an embedded model configuration: {exc}") from None
        model = cls(config, device=device)
        model.load_state_dict(load_file(str(weights_path), device=str(model.device)))
        return model

    # -- protocol ------------------------------------------------------------------------------
    def _embed_ids(self, ids: torch.Tensor) -> PromptEmbeds:
        hidden, pooled = self.text_encoder(ids.to(self.device))
        return PromptEmbeds(hidden, pooled)

    def encode_prompts(self, prompts: list[str]) -> PromptEmbeds:
        return self._embed_ids(self.text_encoder.tokenize(prompts))

    def unconditional_embeds(self, batch: int) -> PromptEmbeds:
        return self._embed_ids(torch.zeros(batch, 3, dtype=torch.long))

    def denoise(self, latents: torch.Tensor, timesteps: torch.Tensor, embeds: PromptEmbeds) -> torch.Tensor:
        return self.denoiser(latents, timesteps, embeds.hidden, embeds.pooled)

    def make_scheduler(self, kind: str = "ddim"):
        if kind == "ddim":
            scheduler = DDIMScheduler(**SCHEDULER_CONFIG, set_alpha_to_one=False, timestep_spacing="trailing")
        elif kind == "ddpm":
            scheduler = DDPMScheduler(**SCHEDULER_CONFIG, variance_type="fixed_small", timestep_spacing="trailing")
        elif kind == "dpmsolver-sde":
            return DPMSolverMultistepScheduler(
                **{k: v for k, v in SCHEDULER_CONFIG.items() if k != "clip_sample"},
                algorithm_type="sde-dpmsolver++", solver_order=1, timestep_spacing="trailing",
            )
        else:
            # No Heun: on this cosine schedule sigma_max is 2e4, and Heun's correction after the first
            # step (to sigma 13) multiplies its error by that ratio (measured: latents 170x off).
            raise ValueError(f"unknown scheduler {kind!r}; the embedded model samples with "
                             f"{', '.join(model_spec(self.name).schedulers)}")
        return with_float64_alphas(scheduler)

    def decode(self, latents: torch.Tensor, detail: float = 1.0, resolution: int | None = None) -> SDFGrid:
        """latents (B, 4, 8, 8, 8) in diffusion scale -> SDFGrid at ``resolution`` voxels a side
        (default: ``detail`` x render_resolution, at least 8). The decoder's point MLP runs once per
        voxel, so detail 0.5 costs about 1/8 (docs/method.md, "Speed")."""
        res = resolution or max(8, round(self.config.render_resolution * detail))
        grid = self.autoencoder.decode_grid(latents * self.config.scaling_factor, res)
        return SDFGrid(grid, TRUNCATION)

    def extract_meshes(self, representation: SDFGrid) -> list[Mesh]:
        return [extract_mesh(g) for g in representation.grid]

    def latents_to_meshes(self, latents: torch.Tensor) -> list[Mesh]:
        """Decode at ``mesh_resolution`` and run marching cubes: one Mesh per latent."""
        with torch.no_grad():
            return self.extract_meshes(self.decode(latents, resolution=self.config.mesh_resolution))

    # -- optional parts of the protocol ------------------------------------------------------------
    def judge_mesh(self, mesh: Mesh, prompt: str):
        """Does ``mesh`` show what ``prompt`` asks? The geometric judge's verdict
        (``shape_judge.judge``, no network): ``ok``, and the ``shape`` and ``colour`` it read."""
        from .shape_judge import judge

        return judge(mesh, prompt)
