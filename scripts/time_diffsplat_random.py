"""Time DiffSplat-PixArt-Sigma's denoiser and GSVAE at full size with random weights (no download).

    python scripts/time_diffsplat_random.py                    # CPU, fp32, one thread
    python scripts/time_diffsplat_random.py --device cuda --dtype bf16

Builds the official-size PixArt-Sigma transformer (0.61B, the multi-view processor installed) and
the SDXL-shaped 12-channel GSVAE from their configs, and prints the seconds of one guided denoiser
call (2 x 4 views, 300 prompt tokens) and of the GSVAE decoding 4 views. Speed does not depend on
the weights' values, so this measures what real weights would cost, before anyone has them; T5 is
left out (random 4096-wide prompt states stand in: it runs once per prompt set).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRANSFORMER = dict(num_attention_heads=16, attention_head_dim=72, in_channels=10, out_channels=8, num_layers=28,
                   cross_attention_dim=1152, attention_bias=True, sample_size=32, patch_size=2,
                   activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
                   norm_elementwise_affine=False, norm_eps=1e-6, caption_channels=4096)
GSVAE = dict(in_channels=12, out_channels=12, down_block_types=("DownEncoderBlock2D",) * 4,
             up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
             latent_channels=4, sample_size=1024, scaling_factor=0.13025)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)

    import torch
    from diffusers import AutoencoderKL, PixArtTransformer2DModel
    from diffusers.utils import logging as diffusers_logging

    from engine.models.diffsplat.attention import use_multiview_attention

    torch.set_num_threads(args.threads)
    diffusers_logging.set_verbosity_error()  # random weights cast with .to(): nothing to warn about
    device, dtype = torch.device(args.device), {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    cuda = device.type == "cuda"

    def timed(fn) -> float:
        best = float("inf")
        for _ in range(args.repeats):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.no_grad():
                fn()
            if cuda:
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        return best

    transformer = PixArtTransformer2DModel(**TRANSFORMER).to(device, dtype).eval()
    use_multiview_attention(transformer, 4)
    x = torch.randn(8, 10, 32, 32, device=device, dtype=dtype)
    hidden = torch.randn(8, 300, 4096, device=device, dtype=dtype)
    mask = torch.ones(8, 300, device=device)
    t = torch.full((8,), 500, device=device)
    cond = {"resolution": None, "aspect_ratio": None}
    denoise_s = timed(lambda: transformer(x, encoder_hidden_states=hidden, encoder_attention_mask=mask, timestep=t,
                                          added_cond_kwargs=cond))
    del transformer
    vae = AutoencoderKL(**GSVAE).to(device, dtype).eval()
    z = torch.randn(4, 4, 32, 32, device=device, dtype=dtype)
    decode_s = timed(lambda: vae.decode(z))
    where = torch.cuda.get_device_name(device) if cuda else f"CPU, {args.threads} thread(s)"
    print(f"{where}, {args.dtype}: guided denoiser call (2 x 4 views) {denoise_s:.2f} s; "
          f"GSVAE decode of 4 views {decode_s:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
