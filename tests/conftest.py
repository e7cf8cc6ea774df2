"""Fixtures every test folder shares.

``assert_reward_gradient``: checks the aligner's reward gradient at a state against central finite
differences along two random directions (call it on float64 models).

``tiny_shap_e``: a Shap-E folder as ``ShapEPipeline.save_pretrained`` writes it, with tiny, randomly
initialised components of diffusers' and transformers' own classes (the sizes of diffusers' own
Shap-E pipeline tests) and a character-level CLIP tokenizer made here: no weights can be
downloaded on the project's machines, and the loading code must still meet the real layout.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

TINY_SHAP_E_LATENT = (16, 32)  # tokens x width: 4 projected MLP layers x 4 rows each


def build_tiny_shap_e(folder: Path, seed: int = 0) -> Path:
    import torch
    from diffusers import HeunDiscreteScheduler, PriorTransformer, ShapEPipeline
    from diffusers.pipelines.shap_e.renderer import ShapERenderer
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    words = folder / "vocab"
    words.mkdir(exist_ok=True)
    (words / "vocab.json").write_text(json.dumps(vocab))
    (words / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(words / "vocab.json"), str(words / "merges.txt"), model_max_length=16)

    tokens, width = TINY_SHAP_E_LATENT
    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, projection_dim=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=len(vocab), max_position_embeddings=16))
    prior = PriorTransformer(
        num_attention_heads=2, attention_head_dim=16, embedding_dim=width, num_embeddings=tokens, embedding_proj_dim=32,
        time_embed_dim=128, num_layers=1, clip_embed_dim=2 * width, additional_embeddings=0, time_embed_act_fn="gelu",
        norm_in_type="layer", encoder_hid_proj_type=None, added_emb_type=None)
    rows = tokens // 4
    renderer = ShapERenderer(param_shapes=((rows, 93), (rows, rows), (rows, rows), (rows, rows)), d_latent=width,
                             d_hidden=rows, n_output=12, background=(0.1, 0.1, 0.1))
    _smooth(renderer)
    _give_surfaces(renderer)
    scheduler = HeunDiscreteScheduler(beta_schedule="exp", num_train_timesteps=1024, prediction_type="sample",
                                      use_karras_sigmas=True, clip_sample=True, clip_sample_range=1.0)
    ShapEPipeline(prior=prior, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                  shap_e_renderer=renderer).save_pretrained(folder)
    return folder


def _smooth(renderer, octaves: int = 3) -> None:
    """Keep the first layer off positional-encoding frequencies above 2^(octaves-1): random weights
    on all 15 octaves make a field of noise whose marching cubes has ~10^5 vertices; a trained
    Shap-E's fields are smooth."""
    import torch

    proj = renderer.params_proj.projections["nerstf__mlp__0__weight"]
    columns = torch.ones(93, dtype=torch.bool)
    columns[:3] = False  # the raw position
    for start in (3, 48):  # the sin and the cos halves, ordered octave-major
        columns[start : start + 3 * octaves] = False
    with torch.no_grad():
        proj.norm.weight[columns] = 0.0
        proj.norm.bias[columns] = 0.0
        proj.proj.bias.view(proj.vectors, proj.channels)[:, columns] = 0.0


def _give_surfaces(renderer, latents: int = 8) -> None:
    """Shift the signed-distance output so that about half of the cube is inside for typical latents
    (clipped noise, as the prior's samples are): a random MLP's field rarely changes sign there, and
    the tests need meshes with vertices."""
    import torch

    g = torch.Generator().manual_seed(1)
    axis = torch.linspace(-1, 1, 12)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    points = torch.stack([x, y, z], -1).reshape(1, -1, 3)
    tokens, width = TINY_SHAP_E_LATENT
    raw = []
    with torch.no_grad():
        mlp = renderer.mlp
        for _ in range(latents):
            projected = renderer.params_proj(torch.randn(1, tokens, width, generator=g).clamp(-1, 1))
            for name, param in mlp.state_dict().items():
                if f"nerstf.{name}" in projected:
                    param.copy_(projected[f"nerstf.{name}"][0])
            raw.append(mlp(position=points, direction=None, ts=None, nerf_level="fine", rendering_mode="stf")
                       .signed_distance.atanh().flatten())
        mlp.mlp[-1].bias[0] -= torch.cat(raw).median()


@pytest.fixture(scope="session")
def tiny_shap_e(tmp_path_factory) -> Path:
    """The folder of a tiny random Shap-E (see the module docstring); read-only by convention."""
    return build_tiny_shap_e(tmp_path_factory.mktemp("shap-e") / "tiny")


@pytest.fixture(scope="session")
def assert_reward_gradient():
    import torch

    from engine.align.methods import reward_and_gradient

    def check(ctx, chunk, x, k: int, grad) -> None:
        for seed in range(2):
            v = torch.randn(x.shape, generator=torch.Generator().manual_seed(10 + seed), dtype=torch.float64)
            eps = 1e-5
            r_plus, _, _ = reward_and_gradient(ctx, chunk, x + eps * v, k)
            r_minus, _, _ = reward_and_gradient(ctx, chunk, x - eps * v, k)
            fd = float((r_plus - r_minus).sum()) / (2 * eps)
            analytic = float((grad * v).sum())
            assert abs(analytic - fd) <= 1e-4 * abs(fd) + 1e-7, (analytic, fd)

    return check
