"""Metrics of the method comparison (engine/align/evaluation.py) and the pieces of
scripts/evaluate_alignment.py that run without training (settings, measurement cache, plots)."""
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from engine.align.lora import has_lora
from engine.align.evaluation import (
    TABLE_COLUMNS,
    accuracy,
    diversity,
    format_tables,
    frechet_distance,
    gaussian_frechet_distance,
    mean_pairwise_distance,
    mean_std,
    trace_sqrt_product,
)

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "evaluate_alignment.py"


def _script():
    """The script as a module (registered in sys.modules: its dataclasses need their module)."""
    if "evaluate_alignment" not in sys.modules:
        spec = importlib.util.spec_from_file_location("evaluate_alignment", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["evaluate_alignment"] = module
        spec.loader.exec_module(module)
    return sys.modules["evaluate_alignment"]


def _with_moments(n: int, mean: torch.Tensor, cov: torch.Tensor, seed: int) -> torch.Tensor:
    """n samples whose *empirical* mean and unbiased covariance are exactly ``mean`` and ``cov``."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, mean.shape[0], generator=g, dtype=torch.float64)
    z = z - z.mean(0)
    emp = z.T @ z / (n - 1)
    white = z @ torch.linalg.inv(torch.linalg.cholesky(emp)).T  # empirical covariance = I
    return white @ torch.linalg.cholesky(cov.double()).T + mean.double()


def _random_cov(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


# --- Fréchet distance ------------------------------------------------------------------------------------

def test_identical_sets_are_at_distance_zero():
    feats = torch.randn(40, 16, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8)
    few = feats[:5]  # fewer samples than dimensions: rank-deficient covariances stay safe
    assert frechet_distance(few, few) == pytest.approx(0.0, abs=1e-8)


def test_shifted_set_is_at_the_squared_shift():
    feats = torch.randn(50, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    shift = torch.tensor([1.0, -2.0, 0.5, 0, 0, 3.0, 0, 0], dtype=torch.float64)
    assert frechet_distance(feats, feats + shift) == pytest.approx(float(shift.square().sum()), rel=1e-9)


def test_scaled_set_adds_the_trace_term():
    # b = 2 a (centred): C_b = 4 C_a, tr sqrt(C_a C_b) = 2 tr C_a, so FD = tr C_a + 4 tr C_a - 4 tr C_a = tr C_a
    cov = _random_cov(5, 2)
    a = _with_moments(30, torch.zeros(5), cov, seed=3)
    assert frechet_distance(a, 2 * a) == pytest.approx(float(torch.trace(cov)), rel=1e-9)


def test_matches_the_closed_form_for_gaussians_with_known_covariances():
    # Diagonal (commuting) covariances: FD = |mu_a - mu_b|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    mu_a, mu_b = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, -1.0])
    da, db = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    expected = float((mu_a - mu_b).square().sum() + (da.sqrt() - db.sqrt()).square().sum())
    a = _with_moments(25, mu_a, torch.diag(da), seed=4)
    b = _with_moments(35, mu_b, torch.diag(db), seed=5)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)

    # Non-commuting 2 x 2 covariances: the square root of a 2 x 2 matrix M with positive eigenvalues
    # has trace sqrt(tr M + 2 sqrt(det M)).
    ca = torch.tensor([[2.0, 0.9], [0.9, 1.0]], dtype=torch.float64)
    cb = torch.tensor([[0.5, -0.3], [-0.3, 3.0]], dtype=torch.float64)
    m = ca @ cb
    tr_sqrt = math.sqrt(float(torch.trace(m)) + 2 * math.sqrt(float(torch.det(m))))
    assert trace_sqrt_product(ca, cb) == pytest.approx(tr_sqrt, rel=1e-10)
    mu = torch.tensor([0.3, -0.7], dtype=torch.float64)
    expected = float(mu.square().sum() + torch.trace(ca) + torch.trace(cb)) - 2 * tr_sqrt
    assert gaussian_frechet_distance(mu, ca, torch.zeros(2), cb) == pytest.approx(expected, rel=1e-10)
    a, b = _with_moments(20, mu, ca, seed=6), _with_moments(30, torch.zeros(2), cb, seed=7)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_symmetric_and_agrees_with_scipy_on_random_sets():
    g = torch.Generator().manual_seed(8)
    a = torch.randn(60, 12, generator=g, dtype=torch.float64)
    b = torch.randn(40, 12, generator=g, dtype=torch.float64) @ torch.randn(12, 12, generator=g, dtype=torch.float64) * 0.5 + 1.0
    ab, ba = frechet_distance(a, b), frechet_distance(b, a)
    assert ab == pytest.approx(ba, rel=1e-9) and ab > 0
    linalg = pytest.importorskip("scipy.linalg")
    ca, cb = torch.cov(a.T).numpy(), torch.cov(b.T).numpy()
    reference = float(((a.mean(0) - b.mean(0)) ** 2).sum()) + ca.trace() + cb.trace() - 2 * linalg.sqrtm(ca @ cb).real.trace()
    assert ab == pytest.approx(reference, rel=1e-6)


def test_frechet_distance_rejects_unusable_input():
    ok = torch.randn(4, 3)
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(ok[:1], ok)
    with pytest.raises(ValueError, match="feature sizes"):
        frechet_distance(ok, torch.randn(4, 5))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(ok, torch.full((4, 3), float("nan")))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        frechet_distance(torch.randn(4), ok)


# --- diversity and summaries -------------------------------------------------------------------------------

def test_diversity_is_the_mean_within_prompt_pairwise_distance():
    s3 = math.sqrt(3.0)
    feats = torch.tensor([
        [0.0, 0.0], [3.0, 4.0],                 # prompt a: one pair at distance 5
        [0.0, 0.0], [2.0, 0.0], [1.0, s3],      # prompt b: equilateral triangle of side 2
        [100.0, 100.0],                         # prompt c: a single sample, not measurable
    ])
    groups = ["a", "a", "b", "b", "b", "c"]
    assert mean_pairwise_distance(feats[:2]) == pytest.approx(5.0)
    assert mean_pairwise_distance(feats[2:5]) == pytest.approx(2.0)
    assert diversity(feats, groups) == pytest.approx(3.5)  # (5 + 2) / 2, far-away c ignored
    collapsed = torch.tensor([[1.0, 1.0]] * 4)
    assert diversity(collapsed, ["a", "a", "b", "b"]) == 0.0
    assert diversity(feats[:3], ["a", "b", "c"]) is None
    with pytest.raises(ValueError, match="group labels"):
        diversity(feats, groups[:-1])


def test_accuracy_and_mean_std():
    assert accuracy([True, False, True, True]) == 0.75
    assert accuracy([]) is None
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and std == pytest.approx(math.sqrt(5 / 3))
    assert mean_std([7.0]) == (7.0, 0.0)
    with pytest.raises(ValueError):
        mean_std([])


# --- the table ------------------------------------------------------------------------------------------

def _fake_results():
    row = {"reward_mean": 0.81234, "reward_std": 0.05, "fd_to_base": 12.5, "critic_accuracy": 0.875,
           "geometric_accuracy": 0.5, "diversity": 3.25, "seconds_per_round": 14.26}
    return {
        "command": ".venv/bin/python scripts/evaluate_alignment.py --out out/t --rounds 2",
        "notes": ["tiny fake run"],
        "rewards": {
            "dnc": {"methods": {"base": {**row, "fd_to_base": 0.7, "seconds_per_round": None}, "nabla": row}},
            "palette": {"methods": {"ddpo": {**row, "reward_mean": -0.0001234, "critic_accuracy": None, "diversity": None}}},
        },
    }


def _table_rows(text: str, title: str) -> list[list[str]]:
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines() if line.startswith("|")]


def test_table_has_the_command_one_table_per_reward_and_rows_in_order():
    text = format_tables(_fake_results())
    assert "```bash\n.venv/bin/python scripts/evaluate_alignment.py --out out/t --rounds 2\n```" in text
    assert "- tiny fake run" in text
    assert text.index("## dnc") < text.index("## palette")
    dnc = _table_rows(text, "dnc")
    assert dnc[0] == ["method", *(h for _, h in TABLE_COLUMNS)]
    assert all(len(r) == len(TABLE_COLUMNS) + 1 for r in dnc)
    assert [r[0] for r in dnc[2:]] == ["base", "nabla"]
    assert dnc[2][1:] == ["0.8123 ± 0.05", "0.7", "87.5 %", "50.0 %", "3.25", "n/a"]
    assert dnc[3][-1] == "14.3" and dnc[3][2] == "12.5"
    palette = _table_rows(text, "palette")
    assert [r[0] for r in palette[2:]] == ["ddpo"]
    assert palette[2][1].startswith("-0.000123 ±")
    assert palette[2][3] == "n/a" and palette[2][5] == "n/a"


def test_table_needs_rewards():
    with pytest.raises(ValueError, match="rewards"):
        format_tables({"command": "x"})


# --- the script without training --------------------------------------------------------------------------

def test_script_settings_defaults_and_overrides(tmp_path):
    script = _script()
    s = script.parse_settings(["--out", str(tmp_path), "--rewards", "dnc", "palette", "--beta", "palette=100",
                               "--option", "palette.softness=0.1"])
    assert s.rewards == {"dnc": {}, "palette": {"palette": "#ff8800", "softness": "0.1"}}
    assert s.betas == {"palette": 100.0}
    assert s.methods == ["base", "refl", "ddpo", "draft", "nabla"] and s.rounds == 20 and s.eval_seeds == 4
    assert len(s.prompts) == 8 and s.resolution == 32 and s.views == 4
    assert s.command.endswith("scripts/evaluate_alignment.py --out " + str(tmp_path)
                              + " --rewards dnc palette --beta palette=100 --option palette.softness=0.1")
    prompts, seeds = s.eval_pairs(script.EVAL_SEED_BASE)
    assert len(prompts) == 32 and seeds[:4] == [2_000_000, 2_000_001, 2_000_002, 2_000_003] and seeds[4] == 2_000_000
    params = script.job_params(s, "palette", "nabla", tmp_path / "palette" / "nabla")
    assert params["reward_options"] == {"palette": {"palette": "#ff8800", "softness": "0.1"}}
    assert params["beta"] == 100.0 and params["steps"] == 20 and params["extra"]["render"]["resolution"] == 32
    # every method of a reward gets the same budget: the job parameters differ only in method and folder
    other = script.job_params(s, "palette", "ddpo", tmp_path / "palette" / "nabla")
    assert {k: v for k, v in other.items() if k != "method"} == {k: v for k, v in params.items() if k != "method"}


def _nabla_and_refl_configs(script, tmp_path, reward: str, *argv: str):
    """The AlignConfigs the script builds for the nabla and refl cells of ``reward``."""
    s = script.parse_settings(["--out", str(tmp_path), "--rewards", reward, *argv])
    return [script.AlignJob.from_params(script.job_params(s, reward, m, tmp_path / m)).config() for m in ("nabla", "refl")]


def test_script_set_reaches_one_methods_config_only(tmp_path):
    script = _script()
    nabla, refl = _nabla_and_refl_configs(script, tmp_path, "dnc", "--set", "nabla.clip_reward_grad=2.5",
                                          "--set", "nabla.reward_weighting=none")
    assert (nabla.clip_reward_grad, nabla.reward_weighting) == (2.5, "none")
    assert (refl.clip_reward_grad, refl.reward_weighting) == (None, "sqrt")


def test_script_sampler_override_keeps_the_aligners_scheduler_unless_named(tmp_path):
    script = _script()
    nabla, refl = _nabla_and_refl_configs(script, tmp_path, "critic", "--sampling-steps", "12",
                                          "--set", 'refl.sampler={"scheduler": "ddim"}')
    assert (nabla.sampler.steps, nabla.sampler.scheduler) == (12, "dpmsolver-sde")
    assert (refl.sampler.steps, refl.sampler.scheduler) == (12, "ddim")
    # Nabla-R2D3 on the critic has its own tuned rate; the other methods keep theirs
    assert nabla.lr == script.DEFAULT_NABLA_LR["critic"] and refl.lr == script.DEFAULT_LR["refl"]


@pytest.mark.parametrize("argv, message", [
    (["--methods", "base", "sgd"], "unknown method"),
    (["--prompts", "a shiny cube"], "vocabulary"),
    (["--rewards", "0.5*dnc"], "not expressions"),
    (["--rewards", "dnc", "--option", "palette.palette=red"], "not in --rewards"),
    (["--rewards", "dnc", "--beta", "palette=3"], "bad --beta"),
    (["--rewards", "dnc", "--beta", "dnc=lots"], "not a number"),
    (["--rounds", "-1"], "--rounds"),
    (["--set", "nabla.colour=3"], "bad --set"),
    (["--methods", "base", "refl", "--set", "nabla.beta=3"], "bad --set"),
    (["--set", "nabla.sampler=3"], "sampler takes a JSON object"),
    (["--set", 'nabla.sampler={"steps": 5}'], "sampler takes a JSON object"),
    (["--rewards", "nope"], "unknown reward"),
])
def test_script_rejects_bad_input_with_exit_2_before_writing(tmp_path, capsys, argv, message):
    out = tmp_path / "table"
    assert _script().main(["--out", str(out), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture(scope="module")
def tiny():
    from engine.models import load_model
    from engine.rewards.critic import CriticNet
    from engine.rewards.registry import build_reward

    torch.manual_seed(0)
    script = _script()
    settings = script.parse_settings(["--rewards", "dnc", "--prompts", "a red cube", "a blue torus", "--eval-seeds", "2",
                                      "--render-resolution", "12", "--render-samples", "12", "--views", "2",
                                      "--sampling-steps", "3"])
    # One thread: these are tiny tensors, and on a shared 2-core machine a second thread mostly waits.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # a randomly initialised critic: the metrics need features and predictions, not a trained network
    yield script, settings, load_model("embedded"), CriticNet().eval(), {"dnc": build_reward("dnc")}
    torch.set_num_threads(threads)


def test_measurement_is_paired_by_seed_and_cached(tiny, tmp_path):
    script, settings, model, critic, rewards = tiny
    prompts, seeds = settings.eval_pairs(script.EVAL_SEED_BASE)
    key = {"k": 1}
    first, cached = script.measure_cached(tmp_path, key, model, prompts, seeds, settings, rewards, critic)
    assert not cached and len(first.rewards["dnc"]) == 4 and first.features.shape == (4, 128)
    assert len(first.critic_ok) == len(first.geometric_ok) == 4
    for row, ok, p in zip(first.details, first.critic_ok, prompts):  # both right <=> accuracy flag
        want_shape, want_colour = p.split()[-1], p.split()[-2]
        assert ok == (row["critic_shape"] == want_shape and row["critic_colour"] == want_colour)
    # same seeds -> same samples: every method is measured on the same noise as the base model
    again = script.measure(model, prompts, seeds, settings, rewards, critic, geometric=False)
    assert again.geometric_ok is None
    assert torch.allclose(again.features, first.features, atol=1e-5)
    assert again.rewards["dnc"] == pytest.approx(first.rewards["dnc"], abs=1e-5)
    reused, cached = script.measure_cached(tmp_path, key, model, prompts, seeds, settings, rewards, critic)
    assert cached and torch.equal(reused.features, first.features) and reused.rewards == first.rewards
    assert script._load_measurement(tmp_path, {"k": 2}, ["dnc"]) is None  # other settings: measure again
    assert script._load_measurement(tmp_path, key, ["dnc", "palette"]) is None  # a reward it lacks


def test_finished_run_with_other_settings_is_refused(tiny, tmp_path):
    script, settings, model, _, _ = tiny
    folder = tmp_path / "dnc" / "nabla"
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({"config": {"steps": 999}, "rounds": 999, "seconds_per_round": 1.0}))
    with pytest.raises(script.UsageError, match="other settings"):
        script.finetune(model, settings, "dnc", "nabla", folder, print)


def test_main_end_to_end_on_tiny_settings_and_resume(tiny, tmp_path, capsys):
    script, _, model, critic, _ = tiny
    out = tmp_path / "table"
    argv = ["--out", str(out), "--rewards", "dnc", "--methods", "base", "nabla", "--rounds", "1", "--trajectories", "2",
            "--eval-seeds", "2", "--prompts", "a red cube", "--render-resolution", "12", "--render-samples", "12",
            "--views", "2", "--sampling-steps", "4", "--threads", "1"]
    assert script.main(argv, model=model, critic=critic) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    rows = results["rewards"]["dnc"]["methods"]
    assert list(rows) == ["base", "nabla"]
    assert rows["nabla"]["rounds"] == 1 and rows["nabla"]["seconds_per_round"] > 0 and rows["base"]["seconds_per_round"] is None
    for row in rows.values():
        assert row["samples"] == 2 and math.isfinite(row["reward_mean"]) and row["fd_to_base"] >= 0
        assert 0 <= row["critic_accuracy"] <= 1 and 0 <= row["geometric_accuracy"] <= 1 and row["diversity"] >= 0
    table = (out / "table.md").read_text()
    assert results["command"] in table and "--methods base nabla" in results["command"]
    assert "| nabla |" in table and "| base |" in table
    for name in ("dnc_curves.png", "dnc_tradeoff.png", "dnc/nabla/report.json", "dnc/nabla/adapter/adapter_model.safetensors",
                 "dnc/nabla/evaluation.json", "base/evaluation.json", "base_floor/features.safetensors"):
        assert (out / name).is_file(), name
    assert not has_lora(model)  # the base model is left as it was
    capsys.readouterr()

    # a second run reuses the finished training and every measurement, and writes the same table
    assert script.main(argv, model=model, critic=critic) == 0
    printed = capsys.readouterr().out
    assert "reusing the finished run" in printed and "round 1/1" not in printed
    again = json.loads((out / "results.json").read_text())["rewards"]["dnc"]["methods"]
    for method in rows:
        for key in ("reward_mean", "fd_to_base", "critic_accuracy", "geometric_accuracy", "diversity", "seconds_per_round"):
            assert again[method][key] == rows[method][key], (method, key)


def test_every_checkpoint_round_is_measured_into_a_curve_and_reused_on_rerun(tiny, tmp_path, capsys):
    """A 2-round run with checkpoint_every 1 gives heldout.jsonl with rounds 0 (base), 1, 2; the last
    round is the final adapter (the same figures as the table's row, measured once); a rerun measures
    nothing again, and a lost round's measurement is redone alone, with the same figures."""
    script, _, model, critic, _ = tiny
    out = tmp_path / "table"
    argv = ["--out", str(out), "--rewards", "dnc", "--methods", "base", "refl", "--rounds", "2", "--trajectories", "1",
            "--eval-seeds", "2", "--prompts", "a red cube", "--render-resolution", "12", "--render-samples", "12",
            "--views", "2", "--sampling-steps", "4", "--set", "refl.checkpoint_every=1", "--lr", "refl=0.05"]
    assert script.main(argv, model=model, critic=critic) == 0, capsys.readouterr().err
    run = out / "dnc" / "refl"
    refuse = lambda c: pytest.fail(f"heldout.jsonl holds {c}")  # noqa: E731
    curve = [json.loads(line, parse_constant=refuse) for line in (run / "heldout.jsonl").read_text().splitlines()]
    assert [r["round"] for r in curve] == [0, 1, 2] and [r["trajectories"] for r in curve] == [0, 1, 2]
    row = json.loads((out / "results.json").read_text())["rewards"]["dnc"]["methods"]
    assert curve[0]["base"] and curve[0]["reward_mean"] == row["base"]["reward_mean"]
    assert curve[0]["fd_to_base"] == 0.0 and curve[0]["fd_floor"] == row["base"]["fd_to_base"]  # base vs itself; the floor
    for key in ("reward_mean", "fd_to_base", "critic_accuracy", "geometric_accuracy", "diversity"):
        assert curve[2][key] == row["refl"][key], key
    assert curve[1]["fd_to_base"] != curve[2]["fd_to_base"]  # two different adapters were measured
    printed = capsys.readouterr().out
    assert "round 1: held-out reward" in printed and "round 2: held-out reward" in printed

    assert script.main(argv, model=model, critic=critic) == 0
    printed = capsys.readouterr().out
    assert "held-out reward" not in printed and "measured round" not in printed
    assert [json.loads(line) for line in (run / "heldout.jsonl").read_text().splitlines()] == curve

    (run / "checkpoints" / "round_0001" / "evaluation.json").unlink()
    assert script.main(argv, model=model, critic=critic) == 0
    printed = capsys.readouterr().out
    assert "measured round 1 " in printed and "measured round 2 " not in printed
    again = [json.loads(line) for line in (run / "heldout.jsonl").read_text().splitlines()]
    for key in ("reward_mean", "fd_to_base", "critic_accuracy", "diversity"):
        assert again[1][key] == pytest.approx(curve[1][key], rel=1e-6, abs=1e-9), key
    assert not has_lora(model)
