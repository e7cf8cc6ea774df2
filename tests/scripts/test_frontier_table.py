"""The frontier queue's plan and command lines (no training: what each job would run)."""
import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "frontier_table.py"


def _module():
    spec = importlib.util.spec_from_file_location("frontier_table_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_method_gets_the_same_tuning_budget_per_reward_and_nabla_two_betas():
    ft = _module()
    jobs = ft.plan()
    assert jobs[0].name == "spread" and [j.name for j in jobs[1:4]] == [
        "tune/dnc/refl/lr0.00015", "tune/dnc/refl/lr0.0005", "tune/dnc/refl/lr0.0015"]
    for reward in ft.REWARDS:
        tuning = [j for j in jobs if j.kind == "tune" and j.reward == reward]
        per_method = {m: [j for j in tuning if j.row == m] for m in ft.METHODS}
        assert all(len(v) == 3 for m, v in per_method.items() if m != "nabla")
        assert len(per_method["nabla"]) == 6 and len({j.beta for j in per_method["nabla"]}) == 2
        assert all(j.budget == ft.TUNE and j.seed == ft.TUNE_SEED for j in tuning)
    paper = [j for j in jobs if j.kind == "paper"]
    assert len(paper) == 24 and all(j.budget == ft.PAPER for j in paper)
    plain = [j for j in jobs if not j.variant]
    assert plain.index(paper[0]) > max(plain.index(j) for j in plain if j.kind == "tune")  # tuning first
    assert len({j.name for j in jobs}) == len(jobs)
    assert len({j.run_folder(Path("/o")) for j in jobs if j.kind != "spread"}) == len(jobs) - 1  # no run shares a folder


def test_paper_jobs_take_the_chosen_setting_from_the_tuning_curves(tmp_path):
    ft = _module()
    curves = {"lr0.0015_beta30000": [(10, 0.985, 3.0)], "lr0.005_beta100000": [(10, 0.990, 9.0), (20, 0.995, 15.0)]}
    for job in ft.tuning_jobs("dnc", ("nabla",)):
        rows = curves.get(ft.setting_slug(job.lr, job.beta), [(10, 0.95, 30.0)])
        folder = job.run_folder(tmp_path)
        folder.mkdir(parents=True)
        (folder / "heldout.jsonl").write_text("".join(
            json.dumps({"round": r, "reward_mean": v, "fd_to_base": fd}) + "\n" for r, v, fd in rows))
    chosen = ft.chosen_settings(tmp_path, "dnc")["nabla"]
    assert (chosen["lr"], chosen["beta"], chosen["complete"]) == (5e-3, 1e5, True)
    job = next(j for j in ft.plan() if j.name == "paper/dnc/seed1/nabla")
    argv = ft.job_argv(tmp_path, job, threads=1)
    text = " ".join(argv)
    assert "--lr nabla=0.005 --set nabla.micro_batch=4 --set nabla.accumulate=4" in text
    assert "--beta dnc=100000" in text and "--rounds 100 --trajectories 16 --eval-seeds 8 --seed 1" in text
    assert "--tuning" not in argv and "nabla.intermediate_detail=0.5" in argv
    tune = ft.job_argv(tmp_path, ft.plan()[1], threads=1)
    assert "--tuning" in tune and " ".join(tune).count("--rounds 30 --trajectories 8 --eval-seeds 4 --seed 2") == 1


# --- the jobs that existed before variants: unchanged, so a running queue resumes them -------------------

EXISTING_JOBS = Path(__file__).with_name("data") / "frontier_table_jobs.json"


def _existing_jobs_snapshot(ft, out: Path) -> list[dict]:
    """Name, folders and evaluate_alignment.py argv (``<out>`` for the output root) of every job that is
    not a variant, in plan order. Paper jobs read their setting from tuning curves, so every tuning run
    first gets a distinct made-up curve (the chosen setting differs between methods and rewards)."""
    plain = [j for j in ft.plan() if not getattr(j, "variant", "")]
    for i, job in enumerate(j for j in plain if j.kind == "tune"):
        folder = job.run_folder(out)
        folder.mkdir(parents=True)
        rows = [{"round": 0, "reward_mean": 0.0, "fd_to_base": 0.0},
                {"round": 10, "reward_mean": 0.1 * ((7 * i) % 5), "fd_to_base": 1.0}]
        (folder / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    root = str(out)
    return [{"name": job.name, "kind": job.kind, "folder": str(job.folder(out).relative_to(out)),
             "run_folder": str(job.run_folder(out).relative_to(out)),
             "status": str(ft.status_path(out, job).relative_to(out)),
             "argv": None if job.kind == "spread" else [a.replace(root, "<out>") for a in ft.job_argv(out, job, threads=1)]}
            for job in plain]


def test_existing_jobs_keep_their_names_folders_and_command_lines(tmp_path):
    """The fixture was written by the code before variants existed: a changed argv (hence AlignConfig)
    or folder would make the running queue train finished or half-done runs again."""
    ft = _module()
    expected = json.loads(EXISTING_JOBS.read_text())
    assert len(expected) == 70 and sum(e["kind"] == "paper" for e in expected) == 24
    assert _existing_jobs_snapshot(ft, tmp_path) == expected
    names = [j.name for j in ft.plan()]
    assert names[:len(expected)] == [e["name"] for e in expected]  # variants only after every existing job


# --- variants: another setting of a method as a row of its own ------------------------------------------

def _curve(folder: Path, rows, seconds_per_round: float | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if seconds_per_round is not None:
        last = max(r["round"] for r in rows)
        (folder / "log.jsonl").write_text("".join(
            json.dumps({"step": s, "reward_mean": 0.0, "time_s": seconds_per_round}) + "\n" for s in range(1, last + 1)))


def test_a_variant_is_tuned_on_its_methods_grid_in_folders_of_its_own(tmp_path):
    ft = _module()
    (variant,) = [v for v in ft.VARIANTS if v.name == "nabla-sub0.1"]
    jobs = ft.plan()
    assert not any(j.kind == "paper" and j.variant for j in jobs)  # paper budget only when asked
    for reward in ft.REWARDS:
        base = [j for j in jobs if j.kind == "tune" and j.reward == reward and j.row == "nabla"]
        mine = [j for j in jobs if j.kind == "tune" and j.reward == reward and j.row == variant.name]
        assert [(j.lr, j.beta, j.seed, j.budget) for j in mine] == [(j.lr, j.beta, j.seed, j.budget) for j in base]
        for b, v in zip(base, mine):
            assert v.name == b.name.replace("/nabla/", "/nabla-sub0.1/") and v.method == "nabla"
            assert v.run_folder(tmp_path).parts[-2:] == (reward, "nabla")  # evaluate_alignment.py's run folder
            assert not v.run_folder(tmp_path).is_relative_to(b.folder(tmp_path))
            expected = ft.job_argv(tmp_path, b, threads=1)
            expected[1] = str(v.folder(tmp_path))
            i = expected.index("nabla.intermediate_detail=0.5") + 1
            assert ft.job_argv(tmp_path, v, threads=1) == expected[:i] + ["--set", "nabla.subsample=0.1"] + expected[i:]


def test_a_variants_command_line_reaches_the_align_config(tmp_path):
    ft = _module()
    job = next(j for j in ft.plan() if j.name == "tune/palette/nabla-sub0.1/lr0.005_beta30000")
    settings = ft._script().parse_settings(ft.job_argv(tmp_path, job, threads=1))
    assert settings.methods == ["base", "nabla"] and settings.tuning and settings.lrs == {"nabla": 5e-3}
    assert settings.overrides["nabla"] == {"micro_batch": 4, "accumulate": 2, "intermediate_detail": 0.5, "subsample": 0.1}
    assert settings.out == job.folder(tmp_path) and settings.betas["palette"] == 3e4


def test_variant_paper_jobs_take_the_variants_own_chosen_setting(tmp_path):
    ft = _module()
    ft.VARIANT_PAPER = True
    jobs = ft.plan()
    paper = [j for j in jobs if j.kind == "paper" and j.variant == "nabla-sub0.1"]
    every_variant = [j for j in jobs if j.kind == "paper" and j.variant]
    assert len(paper) == 6 and len(every_variant) == 6 * len(ft.VARIANTS)
    assert jobs[-len(every_variant):] == every_variant  # after every method's and variant's tuning
    for job in ft.tuning_jobs("dnc", ("nabla", "nabla-sub0.1")):  # nabla prefers lr 0.005, the variant lr 0.015
        good = job.lr == (5e-3 if job.row == "nabla" else 1.5e-2)
        _curve(job.run_folder(tmp_path), [{"round": 10, "reward_mean": 0.9 if good else 0.5, "fd_to_base": 2.0}])
    chosen = ft.chosen_settings(tmp_path, "dnc")
    assert (chosen["nabla"]["lr"], chosen["nabla-sub0.1"]["lr"]) == (5e-3, 1.5e-2)
    assert chosen["nabla-sub0.1"]["label"] == "Nabla-R2D3 (subsample 0.1)" and chosen["nabla-sub0.1"]["method"] == "nabla"
    job = next(j for j in paper if j.name == "paper/dnc/seed1/nabla-sub0.1")
    argv = ft.job_argv(tmp_path, job, threads=1)
    assert "--lr nabla=0.015" in " ".join(argv) and argv[-2:] == ["--set", "nabla.subsample=0.1"]
    assert job.run_folder(tmp_path) != next(j for j in jobs if j.name == "paper/dnc/seed1/nabla").run_folder(tmp_path)
    assert not ft.tuning_finished(tmp_path, "dnc", ("nabla-sub0.1",))


def test_training_clock_sums_round_times_up_to_the_first_gap(tmp_path):
    ft = _module()
    (tmp_path / "log.jsonl").write_text("".join(json.dumps({"step": s, "time_s": t}) + "\n"
                                                for s, t in ((1, 2.0), (2, 3.0), (2, 4.0), (3, 1.0), (5, 9.0))))
    assert ft.training_clock(tmp_path) == {0: 0.0, 1: 2.0, 2: 6.0, 3: 7.0}  # round 2 resumed: its last time
    assert ft.training_clock(tmp_path / "missing") == {}


def test_report_gives_the_variant_its_own_row_seconds_per_round_and_reward_per_second(tmp_path):
    ft = _module()
    for job in ft.tuning_jobs("palette", ("nabla", "refl", "nabla-sub0.1")):
        top = {"nabla": 5e-3, "refl": 5e-4, "nabla-sub0.1": 1.5e-2}[job.row] == job.lr and job.beta in (None, 3e4)
        rows = [{"round": 0, "reward_mean": -0.7, "fd_to_base": 0.0, "fd_floor": 0.3},
                {"round": 10, "reward_mean": -0.3 if top else -0.6, "fd_to_base": 5.0}]
        _curve(job.run_folder(tmp_path), rows, seconds_per_round={"nabla": 10.0, "refl": 4.0, "nabla-sub0.1": 6.0}[job.row])
    ft.report(tmp_path)
    text = (tmp_path / "frontier.md").read_text()
    assert "| Nabla-R2D3 (subsample 0.1) | lr=0.015, beta=30000 **chosen** | -0.3 / 5 (r10) | -0.3 / 5 (r10) | 6.0 |" in text
    assert "| nabla | lr=0.005, beta=30000 **chosen** | -0.3 / 5 (r10) | -0.3 / 5 (r10) | 10.0 |" in text
    # gain 0.4 over the base: per training minute 0.4 / (100 s / 60) = 0.24 for nabla, 0.4 / 1 = 0.4 for the variant
    assert "| nabla | lr=0.005, beta=30000 | 10.0 | -0.3 (r10) | 100 | 0.24 |" in text
    assert "| Nabla-R2D3 (subsample 0.1) | lr=0.015, beta=30000 | 6.0 | -0.3 (r10) | 60 | 0.4 |" in text
    assert (tmp_path / "seconds_palette.png").stat().st_size > 0 and (tmp_path / "tuning_palette.png").is_file()
    chosen = json.loads((tmp_path / "chosen.json").read_text())["palette"]
    assert set(chosen) == {"nabla", "refl", "nabla-sub0.1"} and chosen["nabla-sub0.1"]["sets"] == ["subsample=0.1"]
