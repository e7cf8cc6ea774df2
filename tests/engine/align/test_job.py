"""The alignment job and its command line, end to end on the embedded model at toy size."""
import json
from pathlib import Path

import numpy as np

import pytest
import torch
from PIL import Image

from engine.align.job import SHEET_RESOLUTION, palette_swatches, run_alignment
from engine.align.lora import lora_disabled
from engine.cli import main
from engine.models import load_model
from engine.sampling.sampler import Cancelled, SamplerConfig, sample

TINY = {"render": {"resolution": 12, "samples": 12}, "orbit": {"views": 2, "random_azimuth": True},
        "sampler": {"steps": 4}, "subsample": 0.5}


def _params(out, **kw):
    return {"out_dir": str(out), "reward": "palette", "reward_options": {"palette": {"palette": "#ff8800"}},
            "steps": 2, "trajectories": 2, "eval_seeds": 1, "prompts": ["a red cube"], "extra": dict(TINY), **kw}


@pytest.mark.parametrize("method", ["nabla", "ddpo"])
def test_job_writes_adapter_log_plots_and_report(tmp_path, method):
    seen, previews = [], []
    report = run_alignment(_params(tmp_path / "run", method=method, preview_every=1), progress=lambda f, m: seen.append(f),
                           preview=lambda p, label: previews.append(p))
    out = tmp_path / "run"
    for name in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json", "log.jsonl", "reward_curve.png",
                 "before_after.png", "report.json"):
        assert (out / name).is_file(), name
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["files"]["before_after"] == "before_after.png" and not (out / "before.png").exists()
    with Image.open(out / "before_after.png") as sheet:  # one row of two 192 px renders, under a title
        assert sheet.size[0] > 2 * SHEET_RESOLUTION and SHEET_RESOLUTION + 100 < sheet.size[1] < 2 * SHEET_RESOLUTION
    assert on_disk["method"] == method and on_disk["rounds"] == 2
    assert set(on_disk["reward_before"]) == {"mean", "std"}
    assert len((out / "log.jsonl").read_text().splitlines()) == 2
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert any(p.endswith("reward_curve.png") for p in previews)
    meshes = [p for p in previews if p.endswith(".npz")]
    assert [Path(p).name for p in meshes] == ["round_0001.npz", "round_0002.npz"]  # one per round, in the scene's format
    with np.load(meshes[-1]) as f:
        assert f["vertices"].shape[1] == 3 and f["faces"].dtype == np.int32 and f["colors"].shape[1] == 4
    assert all(Path(p).is_file() for p in previews)
    assert report["reward_after"] == on_disk["reward_after"]


def test_the_sheet_takes_the_target_palette_from_the_reward_object():
    from engine.rewards.registry import build_reward_expression

    orange = {"palette": {"palette": "#ff8800,#0000ff"}}
    want = [(1.0, 0x88 / 255, 0.0), (0.0, 0.0, 1.0)]
    for expression in ("palette", "0.5*dnc + palette"):
        got = palette_swatches(build_reward_expression(expression, orange))
        assert len(got) == 2 and all(g == pytest.approx(w, abs=1e-6) for g, w in zip(got, want))
    assert palette_swatches(build_reward_expression("dnc")) == []


def test_the_sheet_shows_every_prompt_when_it_cannot_show_every_sample():
    from engine.align.job import EVAL_SEED_BASE, sheet_rows

    prompts = [p for p in ("a cube", "a cone", "a torus") for _ in range(8)]
    seeds = [EVAL_SEED_BASE + i for _ in range(3) for i in range(8)]
    rows = sheet_rows(prompts, seeds, limit=7)
    assert rows == sorted(rows) and len(rows) == 7
    assert [(prompts[i], seeds[i] - EVAL_SEED_BASE) for i in rows] == [
        ("a cube", 0), ("a cube", 1), ("a cube", 2), ("a cone", 0), ("a cone", 1), ("a torus", 0), ("a torus", 1)]
    assert sheet_rows(prompts[:4], seeds[:4]) == [0, 1, 2, 3]  # all of them when they fit


def test_bad_parameters_fail_before_any_file_is_written(tmp_path):
    with pytest.raises(ValueError, match="unknown alignment parameter"):
        run_alignment({**_params(tmp_path / "a"), "stpes": 3})
    with pytest.raises(ValueError, match="palette"):
        run_alignment(_params(tmp_path / "b", reward="palete"))
    with pytest.raises(ValueError, match="vocabulary"):
        run_alignment(_params(tmp_path / "c", prompts=["a shiny cube"]))
    assert not any((tmp_path / d).exists() for d in "abc")


def test_cancelled_job_writes_no_adapter(tmp_path):
    rounds = []
    with pytest.raises(Cancelled):
        run_alignment(_params(tmp_path / "run", steps=5), progress=lambda f, m: rounds.append(m),
                      should_cancel=lambda: any(m.startswith("round 1/") for m in rounds))
    assert not (tmp_path / "run" / "adapter").exists()
    assert not (tmp_path / "run" / "report.json").exists()


def test_cli_align_then_generate_with_the_adapter(tmp_path, capsys):
    out = tmp_path / "al"
    code = main(["align", "--reward", "dnc", "--steps", "1", "--trajectories", "2", "--eval-seeds", "1",
                 "--views", "2", "--resolution", "12", "--sampling-steps", "4", "--prompt", "a green cone", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert "held-out reward" in capsys.readouterr().out
    gen = tmp_path / "gen"
    assert main(["generate", "--prompt", "a green cone", "--count", "1", "--steps", "4", "--out", str(gen),
                 "--adapter", str(out / "adapter")]) == 0
    manifest = json.loads((gen / "manifest.json").read_text())
    assert manifest["adapter"]["path"] == str(out / "adapter")
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["render"]["resolution"] == 12 and report["config"]["orbit"]["views"] == 2


def test_cli_rejects_bad_reward_and_bad_adapter_with_exit_2(tmp_path, capsys):
    assert main(["align", "--reward", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "dnc" in capsys.readouterr().err  # the known rewards are listed
    assert main(["align", "--reward", "palette", "--option", "palette.colour=red", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
    assert main(["generate", "--prompt", "a red cube", "--count", "1", "--out", str(tmp_path / "g"),
                 "--adapter", str(tmp_path / "missing")]) == 2
    assert "must be an existing adapter (no such folder)" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


def test_rewards_command_lists_every_builtin(capsys):
    assert main(["rewards"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("dnc", "palette", "reference", "plugin", "critic", "aesthetic"))


def _strict_lines(path):
    """log.jsonl as a strict JSON reader sees it: NaN or Infinity fails the test."""
    refuse = lambda c: pytest.fail(f"{path.name} holds {c}")  # noqa: E731
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def _diverge_at(monkeypatch, step, field="loss"):
    """Make round ``step`` come out with a NaN ``field``, as a too-large beta or lr does."""
    from engine.align.trainer import Aligner

    real = Aligner.train_step

    def train_step(self, should_cancel=None):
        record = real(self, should_cancel)
        if record.step == step:
            setattr(record, field, float("nan"))
        return record

    monkeypatch.setattr(Aligner, "train_step", train_step)


def test_a_diverging_round_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from engine.align.job import AlignmentDiverged

    _diverge_at(monkeypatch, 2)
    out = tmp_path / "run"
    with pytest.raises(AlignmentDiverged) as info:
        run_alignment(_params(out, steps=3, trajectories=1, extra={**TINY, "checkpoint_every": 1}))
    assert str(info.value) == (f"alignment diverged at round 2: loss = nan; the last good checkpoint is kept in "
                               f"{out / 'checkpoint.pt'} (round 1); lower beta or lr and start again in a new folder")
    assert [r["step"] for r in _strict_lines(out / "log.jsonl")] == [1]  # round 2 never reached the log
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 1
    assert not (out / "report.json").exists() and not (out / "adapter").exists()


def test_divergence_in_the_first_round_says_no_checkpoint_was_written(tmp_path, monkeypatch):
    from engine.align.job import AlignmentDiverged

    _diverge_at(monkeypatch, 1, "reward_mean")
    with pytest.raises(AlignmentDiverged, match="round 1: reward_mean = nan; no checkpoint had been written yet"):
        run_alignment(_params(tmp_path / "run", trajectories=1))
    assert not (tmp_path / "run" / "log.jsonl").exists() and not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize(
    "change, words",
    [
        ({"steps": "3"}, "steps must be an integer, got '3'"),
        ({"beta": "big"}, "beta must be a finite number, got 'big'"),
        ({"beta": 1e30}, "beta must be in [0, 1e+12], got 1e+30"),
        ({"extra": {"beta": 1e30}}, "beta must be in [0, 1e+12], got 1e+30"),
        ({"lr": float("nan")}, "lr must be a finite number, got nan"),
        ({"extra": {"lr": 1e30}}, "lr must be in [0, 1], got 1e+30"),
        ({"prompts": "a red cube"}, "prompts must be a non-empty list"),
        ({"resume": "yes"}, "resume must be true or false"),
        ({"reward_options": {"palette": "#ff8800"}}, "reward_options must map reward names to objects"),
        ({"extra": {"subsample": "x"}}, "extra.subsample must be a finite number"),
        ({"extra": {"sampler": {"steps": "4"}}}, "extra.sampler.steps must be an integer"),
        ({"extra": {"sampler": "ddim"}}, "extra.sampler must be an object of SamplerConfig fields"),
        ({"extra": {"orbit": {"views": 0}}}, "orbit.views must be in 1..64, got 0"),
        ({"extra": {"render": {"resolution": -4}}}, "render.resolution must be in 1..4096, got -4"),
        ({"extra": {"render": {"samples": 0}}}, "render.samples must be in 1..4096, got 0"),
        ({"extra": {"orbit": {"radius": 1.0}}}, "orbit.radius must be in [1.75, 1000], got 1"),
    ],
)
def test_wrong_types_and_ranges_are_refused_naming_the_field(tmp_path, change, words):
    from engine.align.job import AlignJob
    from engine.params import BadInput

    with pytest.raises(BadInput) as info:
        AlignJob.from_params(_params(tmp_path / "run", **change)).config()
    assert words in str(info.value)
    assert not (tmp_path / "run").exists()


def test_rerunning_into_the_same_folder_with_another_palette_or_prompts_is_refused(tmp_path):
    """The issue's case: a second align into the same --out with another palette silently continued
    the first run's checkpoint. Now it is refused, naming what differs, and the first run is kept."""
    out = tmp_path / "run"
    run_alignment(_params(out, steps=1, trajectories=1))
    kept = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError, match=r"another configuration \(reward_options.palette.palette: '#0044ff' here, '#ff8800' in the checkpoint\)"):
        run_alignment(_params(out, steps=1, trajectories=1, reward_options={"palette": {"palette": "#0044ff"}}))
    with pytest.raises(ValueError, match=r'\(prompts: \["a blue torus"\] here, \["a red cube"\] in the checkpoint\)'):
        run_alignment(_params(out, steps=1, trajectories=1, prompts=["a blue torus"]))
    with pytest.raises(ValueError, match="of a run that was written with another configuration"):
        run_alignment(_params(out, steps=1, trajectories=1, reward="dnc", reward_options={}, resume=False))
    assert (out / "checkpoint.pt").read_bytes() == kept


def test_ddpo_on_cycles_renders_runs_and_gradient_methods_or_depth_rewards_are_refused(tmp_path):
    pytest.importorskip("bpy")
    report = run_alignment(_params(tmp_path / "cycles", method="ddpo", renderer="cycles", cycles_samples=4))
    assert report["renderer"] == "cycles" and report["rounds"] == 2
    rewards = [json.loads(line)["reward_mean"] for line in (tmp_path / "cycles" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(rewards)) and np.isfinite(report["reward_after"]["mean"])
    with pytest.raises(ValueError, match="needs the reward's gradient, and Cycles renders have none"):
        run_alignment(_params(tmp_path / "a", method="nabla", renderer="cycles"))
    with pytest.raises(ValueError, match="dnc reward reads depth and normal, which Cycles renders do not give"):
        run_alignment(_params(tmp_path / "b", method="ddpo", renderer="cycles", reward="dnc", reward_options={}))
    with pytest.raises(ValueError, match="unknown renderer 'eevee'"):
        run_alignment(_params(tmp_path / "c", method="ddpo", renderer="eevee"))
    assert not any((tmp_path / d).exists() for d in "abc")


def test_cycles_objective_scores_what_the_volume_renderer_scores():
    """Same latents, same cameras: the palette reward on Cycles' albedo pass agrees with the volume
    renderer's (the two differ only in surface extraction and anti-aliasing)."""
    pytest.importorskip("bpy")
    from engine.align.objective import CyclesRenderedReward, RenderedReward
    from engine.render.cameras import OrbitConfig, orbit_cameras
    from engine.render.volume import VolumeRenderConfig
    from engine.rewards.registry import build_reward_expression

    model = load_model("embedded")
    prompts = ["a red cube", "a blue sphere", "a green cone"]
    latents = sample(model, prompts, [0, 1, 2], SamplerConfig(steps=8)).latents
    views = orbit_cameras(OrbitConfig(views=2))
    reward = build_reward_expression("palette", {"palette": {"palette": "#ff0000"}})
    config = VolumeRenderConfig(resolution=32, samples=32)
    volume = RenderedReward(model, reward, render_config=config, image_noise=0.0)(latents, prompts, views)
    cycles = CyclesRenderedReward(model, reward, render_config=config, image_noise=0.0, cycles_samples=4)(latents, prompts, views)
    assert cycles.shape == (3,) and not cycles.requires_grad
    assert torch.allclose(cycles, volume.detach(), atol=0.05), (cycles, volume)
    assert cycles[0] > cycles[1] + 0.3 and cycles[0] > cycles[2] + 0.3  # the red one is on the palette


def test_checkpoint_adapters_are_kept_at_checkpoint_rounds_and_match_the_model_then(tmp_path):
    """checkpoint_adapters keeps round 2, 4 (checkpoint_every 2) and the last round 5; the callback
    sees each with the model holding that round's weights, and the last one is the final adapter."""
    from engine.align.job import checkpoint_adapter_dir
    from engine.align.lora import lora_state_dict, read_adapter

    out = tmp_path / "run"
    model = load_model("embedded")
    seen = {}

    def on_checkpoint(step, adapter):
        seen[step] = (adapter, {k: v.clone() for k, v in lora_state_dict(model).items()})

    run_alignment(_params(out, steps=5, trajectories=1, checkpoint_adapters=True, extra={**TINY, "checkpoint_every": 2}),
                  model=model, on_checkpoint=on_checkpoint)
    assert sorted(seen) == [2, 4, 5]
    kept = sorted(p.parent.name for p in (out / "checkpoints").glob("round_*/adapter"))
    assert kept == ["round_0002", "round_0004", "round_0005"]
    for step, (adapter, live) in seen.items():
        assert adapter == checkpoint_adapter_dir(out, step)
        _, tensors = read_adapter(adapter)
        assert set(tensors) == set(live) and all(torch.equal(tensors[k], live[k]) for k in live)
    _, final = read_adapter(out / "adapter")
    _, last = read_adapter(checkpoint_adapter_dir(out, 5))
    assert all(torch.equal(final[k], last[k]) for k in final)
    _, second = read_adapter(checkpoint_adapter_dir(out, 2))
    assert any(not torch.equal(second[k], last[k]) for k in last)  # the rounds differ: not one adapter copied


def test_without_checkpoint_adapters_nothing_is_kept(tmp_path):
    calls = []
    run_alignment(_params(tmp_path / "run", steps=1, trajectories=1), on_checkpoint=lambda s, a: calls.append(s))
    assert calls == [] and not (tmp_path / "run" / "checkpoints").exists()


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_one_runs(tmp_path):
    """Two identical align runs on one --out both used to finish, their rounds interleaved in
    log.jsonl (1,1,2,2). The second is now refused at once, and the first one is unaffected."""
    from engine.fileio import FolderBusy

    out = tmp_path / "run"
    refused = []

    def second_run(fraction, message):
        if message.startswith("round 1/") and not refused:
            with pytest.raises(FolderBusy, match=r"is in use by another alignment run \(process \d+\)") as info:
                run_alignment(_params(out))
            refused.append(str(info.value))

    report = run_alignment(_params(out), progress=second_run)
    assert refused and report["rounds"] == 2
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2]
    assert not (out / ".align.lock").exists()  # released and removed with the run


def test_a_killed_runs_lock_does_not_keep_the_folder_and_the_cli_exits_2_while_it_is_held(tmp_path, capsys):
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from engine.fileio import folder_lock\n"
         f"with folder_lock({str(out)!r}, 'alignment run', '.align.lock'):\n    print('held', flush=True); time.sleep(600)"],
        cwd=Path(__file__).resolve().parents[3], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code = main(["align", "--reward", "dnc", "--steps", "1", "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and f"is in use by another alignment run (process {holder.pid})" in err, err
        assert not (out / "run.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: nothing runs its cleanup
        holder.wait(10)
    from engine.fileio import folder_lock

    with folder_lock(out, "alignment run", ".align.lock"):  # the OS released the dead process's lock
        assert (out / ".align.lock").read_text().strip() == str(os.getpid())


def test_ddpo_on_cycles_refuses_a_reward_plugin_before_any_work(tmp_path):
    """A plugin that read depth once ran on Cycles' NaN depth and scored 0, exit 0. Plugins are handed
    depth and normal, which Cycles does not render: refused, as docs/alignment.md says."""
    plugin = tmp_path / "depthy.py"
    plugin.write_text("import torch\ndef reward(images, alpha, depth, normal, prompts):\n"
                      "    return -depth.mean(dim=(2, 3, 4))\n")
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="the depthy reward reads depth and normal, which Cycles renders do not give"):
        run_alignment(_params(out, method="ddpo", renderer="cycles", reward="plugin",
                              reward_options={"plugin": {"path": str(plugin)}}))
    with pytest.raises(ValueError, match="reads depth and normal"):  # also as one term of a weighted sum
        run_alignment(_params(out, method="ddpo", renderer="cycles", reward="palette + 0.5 * plugin",
                              reward_options={"palette": {"palette": "#ff8800"}, "plugin": {"path": str(plugin)}}))
    assert not out.exists()


def test_a_plugin_with_detached_scores_under_a_gradient_method_names_the_plugin_and_differentiable(tmp_path):
    """Once: "element 0 of tensors does not require grad", naming neither the plugin nor the fix."""
    plugin = tmp_path / "detached.py"
    plugin.write_text("def reward(images, alpha, depth, normal, prompts):\n    return images.mean((1, 2, 3, 4)).detach()\n")
    with pytest.raises(ValueError, match=r"reward plugin .*detached\.py: `reward` returned scores without a gradient.*"
                                         r"DIFFERENTIABLE = False"):
        run_alignment(_params(tmp_path / "run", method="nabla", steps=1, reward="plugin",
                              reward_options={"plugin": {"path": str(plugin)}}))


def test_a_checkpoint_without_lora_tensors_is_a_clear_error(tmp_path):
    """Once ``KeyError: 'lora'`` from deep in the resume."""
    out = tmp_path / "run"
    run_alignment(_params(out, steps=1, trajectories=1))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    for damage in (lambda s: s.pop("lora"), lambda s: s.update(lora={})):
        broken = dict(state)
        damage(broken)
        torch.save(broken, out / "checkpoint.pt")
        with pytest.raises(ValueError, match=r"checkpoint .*checkpoint\.pt is not a complete alignment checkpoint "
                                             r"\(no (lora|the LoRA tensors of this model)\); remove it to start over"):
            run_alignment(_params(out, steps=2, trajectories=1))


def test_a_run_refused_for_its_checkpoint_path_deletes_and_writes_nothing(tmp_path):
    """Issue 22: a checkpoint.pt that is not a file (here a folder) was refused only after the
    previous run's log.jsonl had been deleted. Now the refusal comes first and names the path."""
    out = tmp_path / "run"
    run_alignment(_params(out, steps=1, trajectories=1))
    log, run = (out / "log.jsonl").read_bytes(), (out / "run.json").read_bytes()
    (out / "checkpoint.pt").unlink()
    (out / "checkpoint.pt").mkdir()
    with pytest.raises(ValueError, match=r"checkpoint\.pt is not a file"):
        run_alignment(_params(out, steps=1, trajectories=1))
    assert (out / "log.jsonl").read_bytes() == log and (out / "run.json").read_bytes() == run


def test_the_critic_with_another_model_is_refused_before_loading_or_writing(tmp_path, monkeypatch, capsys):
    """Issue 22: `align --model shap-e --reward critic` exited 2 only after loading the model and
    writing run.json. The critic reads the embedded model's prompts: refused up front, one line."""
    import engine.models

    def no_loading(*a, **k):
        raise AssertionError("the model was loaded before the refusal")

    monkeypatch.setattr(engine.models, "load_model", no_loading)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"reward 'critic' scores samples of model embedded only, not 'shap-e'"):
        run_alignment(_params(out, model="shap-e", reward="0.5*palette + critic", prompts=["a chair"]))
    assert not out.exists()
    (tmp_path / "weights").mkdir()
    assert main(["align", "--model", "shap-e", "--model-path", str(tmp_path / "weights"), "--reward", "critic",
                 "--prompt", "a chair", "--out", str(out)]) == 2
    assert "reward 'critic' scores samples of model embedded only" in capsys.readouterr().err
    assert not out.exists()


def test_resume_drops_a_torn_last_log_line_and_refuses_a_torn_middle_one(tmp_path):
    """Issue 22: a torn last line in log.jsonl (what a full disk leaves) made resume fail with
    "Expecting ',' delimiter". Now it is dropped with a warning naming the file and the run resumes;
    a bad line before the last is an error naming the file and the line."""
    out = tmp_path / "run"
    run_alignment(_params(out, steps=2, trajectories=1, extra={**TINY, "checkpoint_every": 1}))
    lines = (out / "log.jsonl").read_text().splitlines()
    (out / "log.jsonl").write_text(lines[0] + "\n" + lines[1] + "\n" + lines[1][:20])
    with pytest.warns(UserWarning, match=r"log\.jsonl: dropping its torn last line 3"):
        report = run_alignment(_params(out, steps=3, trajectories=1, extra={**TINY, "checkpoint_every": 1}))
    assert report["rounds"] == 3
    steps = [json.loads(l)["step"] for l in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    good = (out / "log.jsonl").read_text().splitlines()
    (out / "log.jsonl").write_text(good[0] + "\n" + good[1][:20] + "\n" + good[2] + "\n")
    with pytest.raises(ValueError, match=r"log\.jsonl line 2 is not a round's JSON record"):
        run_alignment(_params(out, steps=4, trajectories=1, extra={**TINY, "checkpoint_every": 1}))


def test_a_full_disk_while_saving_the_checkpoint_is_one_line_and_keeps_the_previous_one(tmp_path, monkeypatch):
    """Issue 22: a full disk while saving checkpoint.pt said "enforce fail at inline_container.cc...
    unexpected pos". Now one line names the file and the likely cause, and the previous checkpoint
    is intact (written to a temp file and renamed)."""
    out = tmp_path / "run"
    run_alignment(_params(out, steps=1, trajectories=1))
    kept = (out / "checkpoint.pt").read_bytes()
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        if str(f).endswith(".pt") or "checkpoint" in str(f):
            Path(f).write_bytes(b"PK\x03\x04 torn")  # what a full disk leaves of the zip
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1216 vs 1104")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError) as info:
        run_alignment(_params(out, steps=2, trajectories=1))
    message = str(info.value)
    assert "\n" not in message and f"cannot write checkpoint {out / 'checkpoint.pt'}" in message
    assert "the disk may be full" in message and "the previous checkpoint is kept" in message
    assert (out / "checkpoint.pt").read_bytes() == kept
    assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == ["checkpoint.pt"]  # no temp file left


def test_default_prompts_are_the_models_own(monkeypatch, tmp_path):
    import dataclasses

    from engine.align.job import AlignJob
    from engine.models import REGISTRY
    from engine.params import BadInput

    assert AlignJob(out_dir=str(tmp_path / "a")).prompts == list(REGISTRY["embedded"].alignment.prompts)
    spec = REGISTRY["shap-e"]
    monkeypatch.setitem(REGISTRY, "shap-e", dataclasses.replace(spec, alignment=dataclasses.replace(spec.alignment, prompts=())))
    with pytest.raises(BadInput, match="model 'shap-e' has no default prompts"):
        AlignJob(out_dir=str(tmp_path / "b"), model="shap-e")
    assert AlignJob(out_dir=str(tmp_path / "c"), model="shap-e", prompts=["a wooden chair"]).prompts == ["a wooden chair"]
