"""Run by test_ddp.py under torchrun: a few alignment rounds of the toy, LoRA weights saved per rank."""
import sys

import torch
from safetensors.torch import save_file

from engine.align.config import AlignConfig
from engine.align.lora import lora_state_dict
from engine.align.objective import LinearReward
from engine.align.trainer import Aligner, init_distributed, shutdown_distributed
from engine.models.toy import GaussianToyModel
from engine.sampling.sampler import SamplerConfig

rank, world = init_distributed("cpu")
torch.set_num_threads(1)
model = GaussianToyModel()
cfg = AlignConfig(method=sys.argv[2], beta=2.0, lr=1e-2, lora_rank=2, steps=3, trajectories=4, micro_batch=2,
                  accumulate=2, sampler=SamplerConfig(steps=8))
history = Aligner(model, LinearReward(torch.tensor([1.0, 0.0])), ["x"], cfg).run()
save_file(lora_state_dict(model), f"{sys.argv[1]}/rank{rank}.safetensors",
          metadata={"world": str(world), "reward": str(history[0]["reward_mean"])})
shutdown_distributed()
