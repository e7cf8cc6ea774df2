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
        per_method = {m: [j for j in tuning if j.method == m] for m in ft.METHODS}
        assert all(len(v) == 3 for m, v in per_method.items() if m != "nabla")
        assert len(per_method["nabla"]) == 6 and len({j.beta for j in per_method["nabla"]}) == 2
        assert all(j.budget == ft.TUNE and j.seed == ft.TUNE_SEED for j in tuning)
    paper = [j for j in jobs if j.kind == "paper"]
    assert len(paper) == 24 and all(j.budget == ft.PAPER for j in paper)
    assert jobs.index(paper[0]) > max(jobs.index(j) for j in jobs if j.kind == "tune")  # tuning first
    assert len({j.name for j in jobs}) == len(jobs)


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
