"""Fixtures every test folder shares.

``assert_reward_gradient``: checks the aligner's reward gradient at a state against central finite
differences along two random directions (call it on float64 models).

``tiny_shap_e``: a Shap-E folder as ``ShapEPipeline.save_pretrained`` writes it, with tiny, randomly
initialised components of diffusers' and transformers' own classes (the sizes of diffusers' own
Shap-E pipeline tests) and a character-level CLIP tokenizer made here: no weights can be
downloaded on the project's machines, and the loading code must still meet the real layout.

``tiny_diffsplat``: the same for DiffSplat-PixArt-Sigma (``build_tiny_diffsplat``).
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


def build_tiny_diffsplat(folder: Path, seed: int = 0, settings: dict | None = None) -> Path:
    """A DiffSplat folder in the layout engine/models/diffsplat/loading.py reads, with tiny random
    components of the real classes: PixArtTransformer2DModel (2 layers, sample_size 8, 4 + 6 input
    channels), a 12-channel AutoencoderKL (8x8 latents -> 16x16 splatter images), a 2-layer
    T5EncoderModel with a character-level T5 tokenizer made here, PixArt-Sigma's scheduler config,
    and a diffsplat.json (``settings`` replaces its keys; None: short prompts and splats large enough
    to cover pixels at the tests' tiny resolutions)."""
    import string

    import torch
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtTransformer2DModel
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(c, -2.0) for c in string.ascii_lowercase + string.digits]
    unigram = Tokenizer(models.Unigram(pieces, unk_id=2))
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    unigram.decoder = decoders.Metaspace()
    unigram.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    T5TokenizerFast(tokenizer_object=unigram, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                    extra_ids=0).save_pretrained(folder / "tokenizer")

    torch.manual_seed(seed)
    T5EncoderModel(T5Config(vocab_size=len(pieces), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                            relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                            decoder_start_token_id=0)).save_pretrained(folder / "text_encoder")
    PixArtTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=10, out_channels=8, num_layers=2,
                             cross_attention_dim=16, caption_channels=32, sample_size=8, patch_size=2,
                             norm_type="ada_norm_single", num_embeds_ada_norm=1000, attention_bias=True,
                             activation_fn="gelu-approximate", norm_elementwise_affine=False, norm_eps=1e-6,
                             ).save_pretrained(folder / "transformer")
    vae = AutoencoderKL(in_channels=12, out_channels=12, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                        latent_channels=4, norm_num_groups=4, sample_size=16, scaling_factor=0.5)
    _splat_like(vae)
    vae.save_pretrained(folder / "vae")
    # PixArt-Sigma's betas; v-prediction (DiffSplat's image-conditioned variant's) because a random
    # denoiser's epsilon, divided by alpha = 0.006 at t = 999, would blow the latents up.
    DPMSolverMultistepScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02, prediction_type="v_prediction",
                                solver_order=2).save_pretrained(folder / "scheduler")
    values = {"max_token_length": 16, "scale_min": 0.02, "scale_max": 0.08, "mesh_resolution": 32}
    (folder / "diffsplat.json").write_text(json.dumps(values if settings is None else settings))
    return folder


def _splat_like(vae) -> None:
    """Make the random GSVAE's splatter images look like an object's: depths within +-0.3 of the
    orbit radius (points near the origin, inside the scene cube) and mostly opaque Gaussians; a random
    decoder's depths span the clamp's whole [-1, 1], half of its points outside the cube."""
    import torch

    conv = vae.decoder.conv_out
    with torch.no_grad():
        conv.weight[11] *= 0.1
        conv.bias[11] = 0.0
        conv.bias[10] += 0.8  # opacity (x + 1) / 2 mostly near 0.9


@pytest.fixture(scope="session")
def tiny_diffsplat(tmp_path_factory) -> Path:
    """The folder of a tiny random DiffSplat (see build_tiny_diffsplat); read-only by convention."""
    return build_tiny_diffsplat(tmp_path_factory.mktemp("diffsplat") / "tiny")


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
