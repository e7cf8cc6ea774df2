"""Training of the embedded model from procedural data, in four stages:

1. autoencoder (field grid <-> 4 x 8^3 latent), on freshly sampled shapes every step;
2. latent diffusion (v-prediction, classifier-free dropout of prompt slots) on a fixed set of
   encoded shapes, ending with the EMA weights;
3. decoder refinement against the frozen encoder (sharper colours; latents unchanged);
4. two more cosine cycles of diffusion training.

Everything is seeded from one integer and every stage has its own generator; on the same machine
and thread count the run is reproducible. Defaults are sized for 2 CPU cores (figures in README).
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..models.embedded.procedural import ShapeSpec, field_volume, near_surface_points, sample_spec
from ..fileio import atomic_write, strict_json, write_safetensors
from ..models.embedded.model import EmbeddedConfig, EmbeddedModel
from ..models.embedded.text import prompt_ids


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    ae_steps: int = 1500
    ae_batch: int = 16
    ae_points: int = 2048
    ae_lr: float = 2e-3
    kl_weight: float = 1e-4
    dataset_size: int = 16000
    diffusion_steps: int = 3000
    diffusion_batch: int = 64
    diffusion_lr: float = 6e-4
    ema_decay: float = 0.998
    drop_prompt: float = 0.1  # whole prompt -> unconditional (classifier-free guidance)
    drop_colour: float = 0.1
    drop_size: float = 0.3
    # Stage 3: decoder-only refinement (encoder frozen, so the diffusion latents do not move);
    # squared colour error fixes the colour collapse an L1-only first stage leaves behind.
    decoder_steps: int = 1500
    decoder_lr: float = 1e-3
    colour_weight: float = 20.0
    # Stage 4: further cosine cycles of diffusion training, each from the previous EMA weights.
    diffusion_extra_cycles: int = 2
    diffusion_extra_steps: int = 4000
    diffusion_extra_lr: float = 4e-4


Log = Callable[[str], None]


def _cosine_lr(step: int, total: int, base: float, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _batch_fields(specs: list[ShapeSpec]) -> torch.Tensor:
    return torch.stack([field_volume(s, 32) for s in specs])


def _reconstruction_batch(cfg: TrainConfig, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Fresh shapes: fields (B, 4, 32^3), query points (B, N, 3), their tsdf (B, N), colours (B, N, 3)."""
    specs = [sample_spec(g) for _ in range(cfg.ae_batch)]
    pts, target = zip(*(near_surface_points(s, cfg.ae_points, g) for s in specs))
    colours = torch.tensor([s.rgb for s in specs])[:, None].expand(-1, cfg.ae_points, -1)
    return _batch_fields(specs), torch.stack(pts), torch.stack(target), colours


def _reconstruction_losses(ae, z, pts, target, colours, colour_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder losses at the query points: near-surface-weighted tsdf L1, colour L1 (+ weighted L2)."""
    pred = ae.query(ae.features(z), pts)
    # Errors near the surface decide the mesh, so they weigh more.
    near = 1.0 + 4.0 * (target.abs() < 0.5).float()
    sdf_loss = (near * (pred[..., 0] - target).abs()).mean()
    err = pred[..., 1:] - colours
    return sdf_loss, err.abs().mean() + colour_weight * err.pow(2).mean()


def train_autoencoder(model: EmbeddedModel, cfg: TrainConfig, log: Log) -> None:
    ae = model.autoencoder
    ae.train().requires_grad_(True)
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(ae.parameters(), lr=cfg.ae_lr, weight_decay=0.0)
    t0 = time.time()
    for step in range(cfg.ae_steps):
        fields, pts, target, colours = _reconstruction_batch(cfg, g)
        mean, logvar = ae.encode(fields)
        z = mean + torch.randn(mean.shape, generator=g) * (0.5 * logvar).exp()
        sdf_loss, rgb_loss = _reconstruction_losses(ae, z, pts, target, colours, colour_weight=0.0)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        loss = sdf_loss + rgb_loss + cfg.kl_weight * kl
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(step, cfg.ae_steps, cfg.ae_lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == cfg.ae_steps - 1:
            log(f"ae {step:5d}/{cfg.ae_steps} sdf {sdf_loss.item():.4f} rgb {rgb_loss.item():.4f} kl {kl.item():.3f} ({time.time() - t0:.0f}s)")
    ae.eval().requires_grad_(False)


@torch.no_grad()
def encode_dataset(model: EmbeddedModel, cfg: TrainConfig, log: Log) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means (N, 4, 8, 8, 8) of fresh procedural samples, and their prompt ids (N, 3)."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    latents, ids = [], []
    for start in range(0, cfg.dataset_size, 64):
        specs = [sample_spec(g) for _ in range(min(64, cfg.dataset_size - start))]
        latents.append(model.autoencoder.encode(_batch_fields(specs))[0])
        ids.extend(prompt_ids(s.prompt) for s in specs)
        if start % 3200 == 0:
            log(f"encoded {start}/{cfg.dataset_size}")
    return torch.cat(latents), torch.tensor(ids)


def refine_decoder(model: EmbeddedModel, cfg: TrainConfig, log: Log) -> None:
    """Stage 3: train the decoder (trunk + point MLP) alone against the frozen encoder."""
    ae = model.autoencoder
    decoder = list(ae.trunk.parameters()) + list(ae.point_mlp.parameters())
    for p in decoder:
        p.requires_grad_(True)
    ae.trunk.train()
    ae.point_mlp.train()
    g = torch.Generator().manual_seed(cfg.seed + 3)
    opt = torch.optim.AdamW(decoder, lr=cfg.decoder_lr, weight_decay=0.0)
    t0 = time.time()
    for step in range(cfg.decoder_steps):
        fields, pts, target, colours = _reconstruction_batch(cfg, g)
        with torch.no_grad():
            mean, logvar = ae.encode(fields)
            z = mean + torch.randn(mean.shape, generator=g) * (0.5 * logvar).exp()
        sdf_loss, rgb_loss = _reconstruction_losses(ae, z, pts, target, colours, cfg.colour_weight)
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(step, cfg.decoder_steps, cfg.decoder_lr)
        opt.zero_grad(set_to_none=True)
        (sdf_loss + rgb_loss).backward()
        torch.nn.utils.clip_grad_norm_(decoder, 1.0)
        opt.step()
        if step % 50 == 0 or step == cfg.decoder_steps - 1:
            log(f"decoder {step:5d}/{cfg.decoder_steps} sdf {sdf_loss.item():.4f} rgb {rgb_loss.item():.4f} ({time.time() - t0:.0f}s)")
    ae.eval().requires_grad_(False)


def train_diffusion(
    model: EmbeddedModel, latents: torch.Tensor, ids: torch.Tensor, cfg: TrainConfig, log: Log,
    steps: int, lr: float, seed_offset: int,
) -> None:
    """Train denoiser and prompt encoder on (latents, ids); the denoiser ends as its EMA."""
    g = torch.Generator().manual_seed(cfg.seed + seed_offset)
    scheduler = model.make_scheduler("ddpm")
    alphas = scheduler.alphas_cumprod.float()
    den = model.denoiser
    den.train().requires_grad_(True)
    ema = copy.deepcopy(den).requires_grad_(False)
    text = model.text_encoder
    text.requires_grad_(True)
    params = list(den.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    t0 = time.time()
    for step in range(steps):
        idx = torch.randint(len(latents), (cfg.diffusion_batch,), generator=g)
        x0 = latents[idx]
        cond = ids[idx].clone()
        b = len(idx)
        cond[torch.rand(b, generator=g) < cfg.drop_size, 0] = 0
        cond[torch.rand(b, generator=g) < cfg.drop_colour, 1] = 0
        cond[torch.rand(b, generator=g) < cfg.drop_prompt] = 0
        t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        a = alphas[t].view(-1, 1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        v_target = a.sqrt() * noise - (1 - a).sqrt() * x0
        hidden, pooled = text(cond)
        loss = F.mse_loss(den(xt, t, hidden, pooled), v_target)
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(step, steps, lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            for pe, p in zip(ema.parameters(), den.parameters()):
                pe.lerp_(p, 1 - decay)
        if step % 50 == 0 or step == steps - 1:
            log(f"diffusion {step:5d}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f}s)")
    den.load_state_dict(ema.state_dict())
    den.eval().requires_grad_(False)
    text.requires_grad_(False)


def save_weights(model: EmbeddedModel, directory: str | os.PathLike, meta: dict) -> None:
    """Write model.safetensors then config.json, each atomically, into ``directory``."""
    directory = Path(directory)
    state = model.state_dict()
    write_safetensors(directory / "model.safetensors", state, metadata={k: str(v) for k, v in meta.items()})
    atomic_write(directory / "config.json", lambda tmp: Path(tmp).write_text(model.config.to_json()))


def train_embedded(cfg: TrainConfig, out_dir: str | os.PathLike, log: Log = print, resume_stage2: str | None = None) -> EmbeddedModel:
    """The whole recipe: autoencoder, latent scale, diffusion, decoder refinement, more diffusion.

    ``resume_stage2`` loads weights saved after stage 2 (the first diffusion cycle) and runs only
    stages 3 and 4; each stage has its own generator, so the result equals a full run.
    """
    torch.manual_seed(cfg.seed)
    start = time.time()
    if resume_stage2:
        model = EmbeddedModel.load(resume_stage2)
        latents, ids = encode_dataset(model, cfg, log)
    else:
        model = EmbeddedModel(EmbeddedConfig())
        train_autoencoder(model, cfg, log)
        latents, ids = encode_dataset(model, cfg, log)
        model.config.scaling_factor = float(latents.std())
        log(f"latent std {model.config.scaling_factor:.4f}")
        train_diffusion(model, latents / model.config.scaling_factor, ids, cfg, log, cfg.diffusion_steps, cfg.diffusion_lr, 2)
    refine_decoder(model, cfg, log)
    for cycle in range(cfg.diffusion_extra_cycles):
        train_diffusion(model, latents / model.config.scaling_factor, ids, cfg, log, cfg.diffusion_extra_steps, cfg.diffusion_extra_lr, 4 + cycle)
    save_weights(model, out_dir, {"train_config": strict_json(asdict(cfg)), "seconds": round(time.time() - start)})
    log(f"saved to {out_dir} after {time.time() - start:.0f}s")
    return model
