"""Alignment: finetune any model of the protocol toward a reward with LoRA.

- ``config.AlignConfig``: every setting of a run (method, beta, trust region, subsampling, LoRA, ...).
- ``objective``: what is maximised, a reward of clean latents (``RenderedReward``: decode -> render
  -> 2D reward; ``LinearReward`` for the Gaussian toy).
- ``methods``: the losses on recorded trajectories: Nabla-R2D3 (residual forward nabla-DB with
  trust region; optional residual flow network with reverse and terminal terms) and the baselines
  DDPO, ReFL and DRaFT-1.
- ``trainer.Aligner``: the loop (sampling rounds, micro-batches, AdamW, clipping, checkpoints,
  resume, JSONL log, DDP under torchrun).
- ``lora``: peft LoRA on the denoiser; adapters saved and loaded as peft folders.
- ``job.run_alignment``: the whole job the CLI, the main job and the Blender worker run.
"""
from .config import AlignConfig
from .job import AlignJob, run_alignment
from .lora import AdapterError, add_lora, load_adapter, lora_disabled, save_adapter
from .objective import LinearReward, RenderedReward
from .trainer import Aligner, init_distributed

__all__ = ["AlignConfig", "AlignJob", "run_alignment", "AdapterError", "add_lora", "load_adapter", "lora_disabled",
           "save_adapter", "LinearReward", "RenderedReward", "Aligner", "init_distributed"]
