"""CLIP-family rewards on tiny random CLIP models saved in transformers format (no downloads)."""
import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from engine.render import OrbitConfig, orbit_cameras  # noqa: E402
from engine.render.volume import RenderOutput  # noqa: E402
from engine.rewards import RewardConfigError, RewardModelMissing, build_reward  # noqa: E402
from engine.rewards.clip_rewards import (  # noqa: E402
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    AestheticHead,
    clip_pixel_values,
    load_aesthetic,
    load_clip_score,
    load_hpsv2,
    load_pickscore,
)
from engine.rewards.convert_open_clip import convert_open_clip_checkpoint, open_clip_to_transformers  # noqa: E402

PROMPTS = ["a red cube", "a blue sphere"]
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def tiny_tokenizer():
    """A byte-level BPE CLIP tokenizer over single letters (no merges), built offline."""
    vocab = {c: i for i, c in enumerate(LETTERS)}
    vocab.update({c + "</w>": len(LETTERS) + i for i, c in enumerate(LETTERS)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return transformers.CLIPTokenizer(vocab=vocab, merges=[])


def tiny_clip(seed: int, projection_dim: int = 768, vocab_size: int | None = None):
    tok = tiny_tokenizer()
    config = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=vocab_size or len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=24, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        ),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    return transformers.CLIPModel(config).eval(), tok


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny CLIPModel (projection 768, as the aesthetic head needs) + tokenizer + aesthetic head file."""
    root = tmp_path_factory.mktemp("tiny_clip")
    model, tok = tiny_clip(0)
    model.save_pretrained(root / "clip")
    tok.save_pretrained(root / "clip")
    torch.manual_seed(1)
    torch.save(AestheticHead().state_dict(), root / "head.pth")
    return root


def renders_with_leaf_rgb(b: int = 2, v: int = 2, r: int = 24):
    """RenderOutput whose rgb (B, V, 3, R, R) is a leaf requiring grad: gradients land on the pixels."""
    g = torch.Generator().manual_seed(3)
    rgb = torch.rand(b, v, 3, r, r, generator=g).requires_grad_(True)
    alpha = torch.ones(b, v, 1, r, r)
    out = RenderOutput(rgb, rgb.detach(), alpha, torch.ones_like(alpha), torch.zeros(b, v, 3, r, r), orbit_cameras(OrbitConfig(views=v)))
    return rgb, out


@pytest.mark.parametrize("name", ["aesthetic", "hpsv2", "pickscore", "clip-score"])
def test_scores_are_finite_and_gradients_reach_the_pixels(model_dir, name):
    options = {"model_path": str(model_dir / "clip")}
    if name == "aesthetic":
        options["head_path"] = str(model_dir / "head.pth")
    reward = build_reward(name, options)
    rgb, renders = renders_with_leaf_rgb()
    score = reward(renders, PROMPTS)
    assert score.shape == (2,) and torch.isfinite(score).all()
    score.sum().backward()
    assert torch.isfinite(rgb.grad).all() and (rgb.grad.abs().sum((1, 2, 3, 4)) > 0).all()


def test_text_image_scores_match_transformers_forward(model_dir):
    """cosine / logit scores equal CLIPModel's own logits_per_image on the same inputs."""
    clip_score = load_clip_score(model_dir / "clip")
    pick = load_pickscore(model_dir / "clip")  # the directory has a tokenizer: no fallback to the laion repo
    _, renders = renders_with_leaf_rgb(b=2, v=1)
    pixels = clip_pixel_values(renders.rgb[:, 0].detach(), 32)
    tokens = tiny_tokenizer()(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = clip_score.model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, pixel_values=pixels).logits_per_image
    expected = torch.diagonal(logits)
    scale = clip_score.model.logit_scale.exp()
    with torch.no_grad():
        assert torch.allclose(pick.score_views(renders, PROMPTS)[:, 0], expected, atol=1e-5)
        assert torch.allclose(clip_score.score_views(renders, PROMPTS)[:, 0], expected / scale, atol=1e-6)
        # The prompt matters: swapping prompts changes the scores.
        assert not torch.allclose(clip_score.score_views(renders, PROMPTS[::-1]), clip_score.score_views(renders, PROMPTS))


def test_aesthetic_matches_head_on_normalised_image_features(model_dir):
    reward = load_aesthetic(model_dir / "clip", model_dir / "head.pth")
    full, _ = tiny_clip(0)  # same seed: same weights as the saved model
    head = AestheticHead()
    head.load_state_dict(torch.load(model_dir / "head.pth", weights_only=True))
    _, renders = renders_with_leaf_rgb(b=1, v=3)
    pixels = clip_pixel_values(renders.rgb[0].detach(), 32)
    with torch.no_grad():
        features = full.get_image_features(pixel_values=pixels)
        features = features if torch.is_tensor(features) else features.pooler_output  # transformers 4.x vs 5.x
        expected = head.eval()(F.normalize(features, dim=-1))
        assert torch.allclose(reward.score_views(renders, [""])[0], expected, atol=1e-5)


def test_preprocessing_resizes_and_normalises():
    grey = torch.full((2, 3, 16, 16), 0.5)
    out = clip_pixel_values(grey, 32)
    expected = (0.5 - torch.tensor(OPENAI_CLIP_MEAN)) / torch.tensor(OPENAI_CLIP_STD)
    assert out.shape == (2, 3, 32, 32) and torch.allclose(out, expected.view(1, 3, 1, 1).expand_as(out), atol=1e-5)
    wide = torch.zeros(1, 3, 20, 40)
    wide[..., 10:30] = 1.0  # a white centre band that the centre crop keeps
    crop = clip_pixel_values(wide, 10, mean=(0, 0, 0), std=(1, 1, 1))
    assert crop.shape == (1, 3, 10, 10) and crop[..., 2:8].min() > 0.99
    with pytest.raises(ValueError, match="expected images"):
        clip_pixel_values(torch.zeros(3, 8, 8), 8)


def test_missing_models_give_clear_errors(tmp_path, model_dir):
    with pytest.raises(RewardModelMissing, match=f"no model directory at {tmp_path / 'absent'}"):
        load_clip_score(tmp_path / "absent")
    with pytest.raises(RewardModelMissing, match="nor in the Hugging Face cache.*hf download nabla-r2d3-tests/no-such-model"):
        load_clip_score("nabla-r2d3-tests/no-such-model")
    with pytest.raises(RewardModelMissing, match="hf download nabla-r2d3-tests/no-such-head head.pth"):
        load_aesthetic(model_dir / "clip", "nabla-r2d3-tests/no-such-head:head.pth")
    weights_only = tmp_path / "no_tokenizer"
    tiny_clip(0)[0].save_pretrained(weights_only)
    with pytest.raises(RewardModelMissing, match="pickscore reward tokenizer: laion/CLIP-ViT-H-14-laion2B-s32B-b79K is neither"):
        load_pickscore(weights_only)  # PickScore's tokenizer lives in the laion repo, not in the cache here
    with pytest.raises(RewardModelMissing, match="no CLIP tokenizer in"):
        load_clip_score(weights_only)
    small_vocab = tmp_path / "small_vocab"
    tiny_clip(0, vocab_size=40)[0].save_pretrained(small_vocab)
    tiny_tokenizer().save_pretrained(small_vocab)
    with pytest.raises(RewardConfigError, match="has 54 tokens but the model only 40"):
        load_clip_score(small_vocab)
    with pytest.raises(RewardModelMissing, match="cannot load a CLIPModel"):
        load_clip_score(tmp_path)  # a directory, but no model in it
    with pytest.raises(RewardModelMissing, match="convert_open_clip"):
        load_hpsv2(tmp_path / "absent")
    with pytest.raises(FileNotFoundError):  # RewardModelMissing is also a FileNotFoundError
        build_reward("clip-score", {"model_path": str(tmp_path / "absent")})


def test_bad_aesthetic_head_is_rejected(tmp_path, model_dir):
    torch.save({"weight": torch.zeros(1, 768)}, tmp_path / "linear.pth")
    with pytest.raises(RewardConfigError, match="expected keys"):
        load_aesthetic(model_dir / "clip", tmp_path / "linear.pth")
    torch.save(AestheticHead(in_features=64).state_dict(), tmp_path / "small.pth")
    with pytest.raises(RewardConfigError, match="expects 64-d embeddings but the CLIP model gives 768-d"):
        load_aesthetic(model_dir / "clip", tmp_path / "small.pth")


def open_clip_state_dict(model) -> dict:
    """The inverse of the conversion, written out as OpenCLIP names its tensors (test fixture)."""
    sd = model.state_dict()
    out = {
        "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        "ln_final.bias": sd["text_model.final_layer_norm.bias"],
        "text_projection": sd["text_projection.weight"].T,
        "logit_scale": sd["logit_scale"],
        "visual.class_embedding": sd["vision_model.embeddings.class_embedding"],
        "visual.positional_embedding": sd["vision_model.embeddings.position_embedding.weight"],
        "visual.conv1.weight": sd["vision_model.embeddings.patch_embedding.weight"],
        "visual.ln_pre.weight": sd["vision_model.pre_layrnorm.weight"],
        "visual.ln_pre.bias": sd["vision_model.pre_layrnorm.bias"],
        "visual.ln_post.weight": sd["vision_model.post_layernorm.weight"],
        "visual.ln_post.bias": sd["vision_model.post_layernorm.bias"],
        "visual.proj": sd["visual_projection.weight"].T,
        "attn_mask": torch.full((24, 24), float("-inf")).triu(1),
    }
    for tower, prefix in (("text_model", ""), ("vision_model", "visual.")):
        for i in range(2):
            hf = f"{tower}.encoder.layers.{i}."
            oc = f"{prefix}transformer.resblocks.{i}."
            for kind in ("weight", "bias"):
                out[oc + f"attn.in_proj_{kind}"] = torch.cat([sd[hf + f"self_attn.{p}_proj.{kind}"] for p in "qkv"])
                out[oc + f"attn.out_proj.{kind}"] = sd[hf + f"self_attn.out_proj.{kind}"]
                out[oc + f"ln_1.{kind}"] = sd[hf + f"layer_norm1.{kind}"]
                out[oc + f"ln_2.{kind}"] = sd[hf + f"layer_norm2.{kind}"]
                out[oc + f"mlp.c_fc.{kind}"] = sd[hf + f"mlp.fc1.{kind}"]
                out[oc + f"mlp.c_proj.{kind}"] = sd[hf + f"mlp.fc2.{kind}"]
    return {k: v.clone() for k, v in out.items()}


def test_open_clip_checkpoint_converts_to_an_equivalent_model(tmp_path, model_dir):
    finetuned, _ = tiny_clip(7, projection_dim=16)  # stands in for HPSv2.1: same architecture, other weights
    base = tmp_path / "base"
    finetuned.config.save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    checkpoint = tmp_path / "HPS_tiny.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in open_clip_state_dict(finetuned).items()}}, checkpoint)

    out = convert_open_clip_checkpoint(checkpoint, base, tmp_path / "hps")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["HPS_tiny.pt", "base", "hps"]  # no temp dir left
    hps = load_hpsv2(out)
    _, renders = renders_with_leaf_rgb(b=2, v=1)
    pixels = clip_pixel_values(renders.rgb[:, 0].detach(), 32)
    tokens = tiny_tokenizer()(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = finetuned(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, pixel_values=pixels).logits_per_image
        expected = torch.diagonal(logits) / finetuned.logit_scale.exp()
        assert torch.allclose(hps.score_views(renders, PROMPTS)[:, 0], expected, atol=1e-5)

    with pytest.raises(RewardConfigError, match="already exists"):
        convert_open_clip_checkpoint(checkpoint, base, out)
    with pytest.raises(RewardConfigError, match="no transformers CLIPModel equivalent.*visual.attn_pool"):
        open_clip_to_transformers({**open_clip_state_dict(finetuned), "visual.attn_pool.weight": torch.zeros(1)})
    wrong_base = tmp_path / "wrong_base"
    transformers.CLIPConfig(
        text_config=finetuned.config.text_config.to_dict(), vision_config=finetuned.config.vision_config.to_dict(), projection_dim=8
    ).save_pretrained(wrong_base)
    tiny_tokenizer().save_pretrained(wrong_base)
    with pytest.raises(RewardConfigError, match="does not match the base architecture"):
        convert_open_clip_checkpoint(checkpoint, wrong_base, tmp_path / "hps2")
    assert not (tmp_path / "hps2").exists()
