"""DiffSplat's denoiser: the full-size official transformer's parameter layout (meta device), the
multi-view attention processor, and ``denoise`` on a tiny random DiffSplat (tests/conftest.py)."""
from __future__ import annotations

import pytest
import torch

from engine.models import load_model
from engine.models.diffsplat.attention import MultiViewSelfAttention, use_multiview_attention

# DiffSplat-PixArt-Sigma's transformer as its inference code builds it (src/infer_gsdiff_pas.py: the
# PixArt-Sigma-XL-2-512-MS config with sample_size 32, in_channels 4 + 6, out_channels 8).
OFFICIAL = dict(num_attention_heads=16, attention_head_dim=72, in_channels=10, out_channels=8, num_layers=28,
                cross_attention_dim=1152, attention_bias=True, sample_size=32, patch_size=2,
                activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
                norm_elementwise_affine=False, norm_eps=1e-6, caption_channels=4096)


def _official_layout() -> dict[str, tuple[int, ...]]:
    """Every parameter of the official PixArtTransformerMV2DModel (extensions/diffusers_diffsplat),
    as read from its constructor: PatchEmbed, 28 BasicMVTransformerBlocks (BasicTransformerBlock's
    modules), the output table and projection, AdaLayerNormSingle, the caption projection."""
    d, ff, cap, t_freq = 1152, 4 * 1152, 4096, 256
    layout = {"scale_shift_table": (2, d), "pos_embed.proj.weight": (d, 10, 2, 2), "pos_embed.proj.bias": (d,),
              "proj_out.weight": (2 * 2 * 8, d), "proj_out.bias": (2 * 2 * 8,),
              "adaln_single.emb.timestep_embedder.linear_1.weight": (d, t_freq),
              "adaln_single.emb.timestep_embedder.linear_1.bias": (d,),
              "adaln_single.emb.timestep_embedder.linear_2.weight": (d, d),
              "adaln_single.emb.timestep_embedder.linear_2.bias": (d,),
              "adaln_single.linear.weight": (6 * d, d), "adaln_single.linear.bias": (6 * d,),
              "caption_projection.linear_1.weight": (d, cap), "caption_projection.linear_1.bias": (d,),
              "caption_projection.linear_2.weight": (d, d), "caption_projection.linear_2.bias": (d,)}
    for i in range(28):
        block = f"transformer_blocks.{i}."
        layout[block + "scale_shift_table"] = (6, d)
        for attn in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v", "to_out.0"):
                layout[f"{block}{attn}.{proj}.weight"] = (d, d)
                layout[f"{block}{attn}.{proj}.bias"] = (d,)
        layout[block + "ff.net.0.proj.weight"], layout[block + "ff.net.0.proj.bias"] = (ff, d), (ff,)
        layout[block + "ff.net.2.weight"], layout[block + "ff.net.2.bias"] = (d, ff), (d,)
    return layout


def test_the_full_size_stock_transformer_has_the_official_checkpoints_keys_and_shapes():
    from diffusers import PixArtTransformer2DModel

    with torch.device("meta"):
        transformer = PixArtTransformer2DModel(**OFFICIAL)
    use_multiview_attention(transformer, 4)  # a processor: no parameter added, none renamed
    ours = {k: tuple(v.shape) for k, v in transformer.state_dict().items()}
    assert ours == _official_layout()
    total = sum(p.numel() for p in transformer.parameters())
    assert total == 610_883_744  # 0.61B, as the DiffSplat paper lists PixArt-Sigma's


@pytest.fixture(scope="module")
def model(tiny_diffsplat):
    return load_model("diffsplat", tiny_diffsplat)


def test_multiview_self_attention_mixes_views_where_the_stock_processor_does_not(model):
    from diffusers.models.attention_processor import AttnProcessor2_0

    attn = model.denoiser.transformer_blocks[0].attn1
    assert isinstance(attn.processor, MultiViewSelfAttention) and attn.processor.views == 4
    assert not isinstance(model.denoiser.transformer_blocks[0].attn2.processor, MultiViewSelfAttention)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * 4, 16, attn.query_dim, generator=g)
    y = x.clone()
    y[2] += torch.randn(y[2].shape, generator=g)  # sample 0, view 2
    with torch.no_grad():
        out_x, out_y = attn(x), attn(y)
        assert not torch.allclose(out_x[0], out_y[0], atol=1e-4)  # view 0 of the same sample sees it
        assert torch.equal(out_x[4:], out_y[4:])  # the other sample does not
        stock = AttnProcessor2_0()
        assert torch.equal(stock(attn, x)[0], stock(attn, y)[0])  # per view: view 0 never sees view 2
        # One view: exactly the stock processor.
        single = MultiViewSelfAttention(1)
        assert torch.allclose(single(attn, x), stock(attn, x), atol=1e-6)


def test_denoise_appends_the_plucker_rays_repeats_the_prompt_per_view_and_drops_the_variance(model):
    b = 2
    x = torch.randn(b, *model.latent_shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([999, 10])
    embeds = model.encode_prompts(["a red chair", "a blue car"])
    with torch.no_grad():
        out = model.denoise(x, t, embeds)
        v, c, h, w = model.latent_shape
        rays = model.plucker.float().expand(b, -1, -1, -1, -1)
        raw = model.denoiser(torch.cat([x, rays], 2).reshape(b * v, c + 6, h, w),
                             encoder_hidden_states=embeds.hidden.repeat_interleave(v, 0),
                             encoder_attention_mask=embeds.mask.repeat_interleave(v, 0),
                             timestep=t.repeat_interleave(v), added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
    assert out.shape == x.shape and model.denoiser.config.out_channels == 2 * c
    assert torch.allclose(out, raw[:, :c].reshape(b, v, c, h, w))
    with torch.no_grad():  # the second sample alone gives its own rows: no leak across the batch
        assert torch.allclose(model.denoise(x[1:], t[1:], embeds[1:2]), out[1:], atol=1e-5)
    with pytest.raises(ValueError, match="latents must be"):
        model.denoise(x[:, :3], t, embeds)


def test_prompts_are_encoded_once_per_set_with_their_mask_and_the_empty_prompt_as_unconditional(model):
    model._prompt_cache.clear()
    calls = []
    hook = model.text_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        first = model.encode_prompts(["A Red Chair  ", "a car"])
        again = model.encode_prompts(["A Red Chair  ", "a car"])
        assert again is first and len(calls) == 1
        assert torch.equal(first.hidden[0], model.encode_prompts(["a red chair"]).hidden[0])  # lower-cased, stripped
        uncond = model.unconditional_embeds(3)
        assert uncond.hidden.shape == (3, 16, 32) and uncond.mask.tolist() == [[1] + [0] * 15] * 3  # "" is </s>
        assert first.mask.shape == (2, 16) and first.mask[1].sum() < first.mask[0].sum()
        for i in range(40):  # bounded
            model.encode_prompts([f"prompt {i}"])
        assert len(model._prompt_cache) <= model.settings.prompt_cache_size
    finally:
        hook.remove()
