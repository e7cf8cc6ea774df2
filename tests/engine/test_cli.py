import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.cli import main
from engine.models.embedded.grammar import COLOURS, SHAPES
from engine.geometry.mesh import load_mesh

ROOT = Path(__file__).resolve().parents[2]


def test_vocabulary_lists_every_word(capsys):
    assert main(["vocabulary"]) == 0
    out = capsys.readouterr().out
    assert all(w in out for w in (*COLOURS, *SHAPES))


def test_word_outside_vocabulary_exits_2_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "generate", "--prompt", "a shiny cube", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "'shiny' is not in the vocabulary" in proc.stderr
    assert all(w in proc.stderr for w in (*COLOURS, *SHAPES))
    assert not out.exists()


def test_unwritable_output_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["generate", "--prompt", "a red cube", "--count", "1", "--out", str(blocker / "sub")]) == 1
    assert "error:" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"


def test_bad_option_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["generate", "--prompt", "a red cube", "--count", "0", "--out", str(tmp_path)])
    assert info.value.code == 2


def test_generate_writes_meshes_and_manifest(tmp_path):
    out = tmp_path / "gen"
    code = main(["generate", "--prompt", "a red cube", "--seed", "3", "--count", "2", "--out", str(out), "--format", "glb", "--format", "ply"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["prompts"] == ["a red cube"] and [a["seed"] for a in manifest["assets"]] == [3, 4]
    assert set(manifest["timings"]) >= {"sample_s", "mesh_s", "export_s", "per_asset_s"}
    for asset in manifest["assets"]:
        mesh = load_mesh(out / asset["files"]["glb"])
        assert len(mesh.faces) == asset["faces"] > 100
        assert (out / asset["files"]["ply"]).is_file()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temp files


# the cheapest demo: two prompts, 48 px Cycles tiles, 6 sampling steps
SMALL_DEMO = ["demo", "--prompt", "a red cube", "--prompt", "a blue torus", "--resolution", "48", "--samples", "4",
              "--steps", "6"]


@pytest.fixture(scope="module")
def aligned_demo(tmp_path_factory) -> Path:
    """A small demo with one alignment round (shared: it takes half a minute); tests that change it copy it."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    assert main([*SMALL_DEMO, "--out", str(out), "--align-steps", "1"]) == 0
    return out


def test_demo_writes_meshes_contact_sheet_and_manifest(aligned_demo):
    from PIL import Image

    out = aligned_demo
    from engine.generate.records import GenerateResult

    manifest = json.loads((out / "manifest.json").read_text())
    # base/ and aligned/ are generate runs, each with its manifest in the one generate schema
    base, aligned = (GenerateResult.read(out / manifest[k]) for k in ("base", "aligned"))
    assert [a.prompt for a in base.assets] == [a.prompt for a in aligned.assets] == ["a red cube", "a blue torus"]
    assert all(a.path("glb", r.out_dir).is_file() for r in (base, aligned) for a in r.assets)
    assert base.preview.renderer == aligned.preview.renderer == "cycles" and base.timings["preview_s"] > 0
    assert aligned.adapter.path == str(out / "align" / "adapter") and base.adapter is None
    assert manifest["timings"]["base_s"] > 0 and manifest["timings"]["align_s"] > 0
    assert manifest["alignment"]["rounds"] == 1
    for key in ("adapter", "reward_curve", "before_after", "report"):
        assert (out / manifest["alignment"][key]).exists()
    sheet = Image.open(out / manifest["contact_sheet"])
    # two tiles a row (with gutters), base row over aligned row, under a title band
    assert 2 * 48 < sheet.size[0] < 2 * 48 + 30 and sheet.size[1] > 2 * 48 + 30
    pixels = sheet.convert("RGB").load()
    # The red cube's tile (left column) is not blank: some pixel is clearly red.
    assert any(pixels[x, y][0] > 150 and pixels[x, y][1] < 90 for x in range(sheet.size[0] // 2) for y in range(sheet.size[1]))


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_demo_rerun_without_alignment_removes_the_previous_aligned_run(aligned_demo, tmp_path, capsys):
    """--align-steps 0 into a folder holding an aligned demo: its aligned/ goes (only that run's listed
    files; a folder with anything else is refused and nothing changes), and the pointer manifest no
    longer names it."""
    import shutil

    out = tmp_path / "demo"
    shutil.copytree(aligned_demo, out)
    assert json.loads((out / "manifest.json").read_text())["aligned"] == "aligned/manifest.json"
    stray = out / "aligned" / "my notes.txt"
    stray.write_text("not the demo's")
    before = _files(out)
    assert main([*SMALL_DEMO, "--out", str(out), "--align-steps", "0"]) == 2
    err = _one_line_error(capsys)
    assert "a demo rerun replaces only a previous generate run" in err and "my notes.txt" in err
    assert _files(out) == before  # refused before any work: everything kept, the pointer unchanged

    stray.unlink()
    assert main([*SMALL_DEMO, "--out", str(out), "--align-steps", "0"]) == 0
    assert not (out / "aligned").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["aligned"] is None and manifest["alignment"] is None and "align_s" not in manifest["timings"]
    assert manifest["base"] == "base/manifest.json" and (out / manifest["base"]).is_file()
    assert (out / "base" / "manifest.json").read_bytes() != before["base/manifest.json"]  # base/ is this run's


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


ALIGN = ["align", "--reward", "palette", "--option", "palette.palette=#ff8800"]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["generate", "--prompt", "a red cube", "--adapter-weight", "nan"], "--adapter-weight must be a finite number, got nan"),
        (["generate", "--prompt", "a red cube", "--adapter-weight", "inf"], "--adapter-weight must be a finite number"),
        (["generate", "--prompt", "a red cube", "--count", "1000000000"], "--count must be in 1..256, got 1000000000"),
        (["generate", "--prompt", "a red cube", "--guidance", "nan"], "--guidance must be a finite number"),
        ([*ALIGN, "--beta", "1e30"], "beta must be in [0, 1e+12], got 1e+30"),
        ([*ALIGN, "--beta", "nan"], "beta must be a finite number, got nan"),
        ([*ALIGN, "--lr", "inf"], "lr must be a finite number, got inf"),
        ([*ALIGN, "--lr", "1e30"], "lr must be in [0, 1], got 1e+30"),
        (["align", "--reward", "1e999*palette", "--option", "palette.palette=#ff8800"], "the weight 1e999 is too large"),
        ([*ALIGN, "--eval-seeds", "1000000000"], "eval_seeds must be in 1..64, got 1000000000"),  # was MemoryError
        ([*ALIGN, "--threads", "1000000000"], "--threads must be in 0.."),
        (["generate", "--prompt", "a red cube", "--threads", "1000000000"], "--threads must be in 0.."),
        (["generate", "--prompt", "a red cube", "--threads", "-2"], "--threads must be in 0.."),
    ],
)
def test_non_finite_or_absurd_numbers_are_one_line_and_exit_2(tmp_path, capsys, argv, words):
    t0 = time.perf_counter()
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert words in _one_line_error(capsys)
    assert time.perf_counter() - t0 < 20  # answered before any work (--count 1e9 took 32 s to fail with MemoryError)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("device", ["cuda", "mps"])
@pytest.mark.parametrize("command", [["generate", "--prompt", "a red cube"], ALIGN])
def test_unavailable_device_is_one_line_naming_the_offered_devices(tmp_path, capsys, monkeypatch, command, device):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU build of torch, whatever this machine has
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert main([*command, "--device", device, "--out", str(tmp_path / "out")]) == 2
    assert _one_line_error(capsys) == f"error: device {device!r} is not available: this torch ({torch.__version__}) offers auto, cpu\n"
    assert not (tmp_path / "out").exists()


LONG_PROMPT = ("a weathered bronze statue of a horse rearing on a marble plinth, " * 5)[:320]


def test_a_320_character_open_text_prompt_gets_bounded_file_names(tmp_path, tiny_shap_e):
    """File names were the whole prompt: "File name too long" after sampling. engine.naming.slug bounds them."""
    from engine.naming import slug

    out = tmp_path / "gen"
    code = main(["generate", "--model", "shap-e", "--model-path", str(tiny_shap_e), "--prompt", LONG_PROMPT,
                 "--count", "1", "--steps", "2", "--scheduler", "heun", "--seed", "7", "--out", str(out)])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    (asset,) = manifest["assets"]
    assert manifest["prompts"] == [LONG_PROMPT] == [asset["prompt"]]  # the prompt itself is kept whole
    assert asset["files"]["glb"] == f"{slug(LONG_PROMPT)}_seed7.glb" and len(asset["files"]["glb"]) <= 80
    assert len(load_mesh(out / asset["files"]["glb"]).faces) == asset["faces"]


# -- issue 22: help texts, one download hint, a missing model folder, a reused --out ----------------
def test_every_option_of_generate_and_align_has_help_and_align_shows_its_defaults(capsys):
    from engine.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for command in ("generate", "align", "demo"):
        undocumented = [a.option_strings[0] for a in sub.choices[command]._actions if a.option_strings and not a.help]
        assert undocumented == [], (command, undocumented)
    with pytest.raises(SystemExit) as info:
        main(["align", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for default in ("--method {nabla,refl,draft,ddpo} alignment method (default: nabla)", "(default: 4)", "(default: 32)",
                    "--seed SEED seed of the training rounds' random choices (default: 0)", "--checkpoint-every",
                    "(default: cpu)"):
        assert default in text, default
    assert "(default: None)" not in text


def test_the_weights_download_hint_has_one_spelling_everywhere():
    """huggingface_hub >= 1.0 (what diffusers and transformers pull in) ships `hf`, not `huggingface-cli`."""
    import shutil

    assert shutil.which("hf", path=str(Path(sys.executable).parent)) is not None
    files = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("engine/**/*.py"), *ROOT.glob("scripts/*.py"),
             *ROOT.glob("blender/**/*.py")]
    stale = [str(f.relative_to(ROOT)) for f in files if "huggingface-cli" in f.read_text(encoding="utf-8")]
    assert stale == []


@pytest.mark.parametrize("model", ["embedded", "shap-e", "diffsplat"])
def test_a_missing_model_folder_is_bad_input_exit_2(tmp_path, capsys, model):
    out = tmp_path / "out"
    assert main(["generate", "--model", model, "--model-path", str(tmp_path / "no-such-folder"), "--prompt", "a red cube",
                 "--count", "1", "--out", str(out)]) == 2
    assert "no-such-folder" in _one_line_error(capsys)
    assert not out.exists()


GEN = ["generate", "--prompt", "a red cube", "--count", "1", "--steps", "4"]


def test_generate_refuses_a_non_empty_out_and_overwrite_replaces_only_the_previous_run(tmp_path, capsys):
    out = tmp_path / "gen"
    assert main([*GEN, "--seed", "1", "--format", "glb", "--format", "ply", "--out", str(out)]) == 0
    first = sorted(p.name for p in out.iterdir())
    assert len(first) == 3 and "manifest.json" in first  # a GLB, a PLY and the manifest
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()
    # again without --overwrite: exit 2 before anything is loaded, nothing touched
    assert main([*GEN, "--seed", "2", "--out", str(out)]) == 2
    assert "is not empty" in _one_line_error(capsys)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamp
    # --overwrite: the previous run's files go, the folder holds exactly what the new manifest lists
    assert main([*GEN, "--seed", "2", "--out", str(out), "--overwrite"]) == 0
    assert "removed the previous run's 3 files" in capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {"manifest.json", *(f for a in manifest["assets"] for f in a["files"].values())}
    assert {p.name for p in out.iterdir()} == listed and all("seed2" in n for n in listed - {"manifest.json"})
    # a file no manifest lists is never deleted, --overwrite or not
    (out / "notes.txt").write_text("mine")
    assert main([*GEN, "--out", str(out), "--overwrite"]) == 2
    assert "notes.txt" in _one_line_error(capsys)
    assert (out / "notes.txt").read_text() == "mine" and {p.name for p in out.iterdir()} == listed | {"notes.txt"}


def test_run_sh_help_is_usage_on_request_and_unknown_commands_are_errors():
    ok = subprocess.run(["bash", str(ROOT / "run.sh"), "--help"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and "finetune" in ok.stdout and "run.sh test" in ok.stdout, ok
    bad = subprocess.run(["bash", str(ROOT / "run.sh"), "bogus"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "unknown command 'bogus'" in bad.stderr


# -- issue 22: an interrupted align keeps its last round; more rounds continue a finished run -------
TINY_ALIGN = [*ALIGN, "--trajectories", "2", "--eval-seeds", "1", "--views", "2", "--resolution", "12",
              "--sampling-steps", "4", "--prompt", "a green cone"]


def _log_steps(out: Path) -> list[int]:
    log = out / "log.jsonl"
    return [json.loads(l)["step"] for l in log.read_text().splitlines() if l.strip()] if log.is_file() else []


@pytest.mark.parametrize("sig, code, word", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_an_interrupted_align_writes_a_checkpoint_of_its_last_round_and_resumes_from_it(tmp_path, capsys, sig, code, word):
    import signal

    import torch

    out = tmp_path / "al"
    # A shell without job control starts background commands with SIGINT ignored, and Python then
    # installs no Ctrl-C handler: give the child the default disposition, as a terminal would.
    proc = subprocess.Popen([sys.executable, "-m", "engine", *TINY_ALIGN, "--steps", "200", "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while len(_log_steps(out)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    done = _log_steps(out)
    assert len(done) >= 2 and done == list(range(1, len(done) + 1))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == len(done)  # the default interval (10) would have kept nothing
    assert f"{word}; the checkpoint of round {len(done)} of 200 is in" in err
    assert "Traceback" not in err
    # the same run with another --checkpoint-every and fewer rounds than asked first: it resumes
    assert main([*TINY_ALIGN, "--steps", str(len(done) + 1), "--checkpoint-every", "3", "--out", str(out)]) == 0
    assert f"resuming from round {len(done)} of {len(done) + 1}" in capsys.readouterr().err
    assert _log_steps(out) == list(range(1, len(done) + 2))


def test_more_rounds_continue_a_finished_align_and_other_settings_are_named(tmp_path, capsys):
    out = tmp_path / "al"
    assert main([*TINY_ALIGN, "--steps", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main([*TINY_ALIGN, "--steps", "2", "--out", str(out)]) == 0
    assert "resuming from round 1 of 2" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["rounds"] == 2 and _log_steps(out) == [1, 2]
    assert json.loads((out / "adapter" / "nabla_adapter.json").read_text())["steps"] == 2  # the adapter of round 2
    assert main([*TINY_ALIGN, "--steps", "3", "--lr", "0.5", "--out", str(out)]) == 2
    err = _one_line_error(capsys)
    assert "lr: 0.5 here, " in err and " in the checkpoint" in err, err
    assert _log_steps(out) == [1, 2]
