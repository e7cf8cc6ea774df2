"""The loop's promises: resume continues exactly, logs and checkpoints stay consistent, misuse is refused."""
import json
import math

import pytest
import torch

from engine.align.config import AlignConfig
from engine.align.lora import lora_state_dict
from engine.align.objective import LinearReward
from engine.align.trainer import CHECKPOINT, LOG, Aligner
from engine.models.toy import GaussianToyModel
from engine.sampling.sampler import Cancelled, SamplerConfig

DIRECTION = torch.tensor([1.0, 0.0])


def _config(**kw):
    return AlignConfig(**{**dict(beta=2.0, lr=1e-2, lora_rank=2, steps=6, trajectories=8, micro_batch=4,
                                 checkpoint_every=2, sampler=SamplerConfig(steps=10)), **kw})


@pytest.mark.parametrize("method, extra", [("nabla", {}), ("ddpo", {}), ("nabla", {"train_on_previous": True}),
                                           ("ddpo", {"train_on_previous": True})])
def test_interrupted_and_resumed_run_ends_bit_for_bit_where_a_straight_run_ends(tmp_path, method, extra):
    straight = GaussianToyModel()
    Aligner(straight, LinearReward(DIRECTION), ["x"], _config(method=method, **extra), tmp_path / "a").run()

    class Stop(Exception):
        pass

    first = GaussianToyModel()
    calls = []

    def stop_after_three(record):
        calls.append(record.step)
        if record.step == 3:  # the checkpoint at step 2 is the last one written; step 3 is redone
            raise Stop

    with pytest.raises(Stop):
        Aligner(first, LinearReward(DIRECTION), ["x"], _config(method=method, **extra), tmp_path / "b").run(progress=stop_after_three)
    resumed_model = GaussianToyModel()
    resumed = Aligner(resumed_model, LinearReward(DIRECTION), ["x"], _config(method=method, **extra), tmp_path / "b")
    assert resumed.step == 2
    resumed.run()

    a, b = lora_state_dict(straight), lora_state_dict(resumed_model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(a[k].abs().sum() > 0 for k in a if "lora_B" in k)  # it did train
    log_a = [json.loads(l) for l in (tmp_path / "a" / LOG).read_text().splitlines()]
    log_b = [json.loads(l) for l in (tmp_path / "b" / LOG).read_text().splitlines()]
    assert [r["step"] for r in log_b] == list(range(1, 7))
    strip = lambda rs: [{k: v for k, v in r.items() if k != "time_s"} for r in rs]
    assert strip(log_a) == strip(log_b)


def test_checkpoint_of_another_configuration_is_refused(tmp_path):
    Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["x"], _config(steps=2), tmp_path).run()
    assert (tmp_path / CHECKPOINT).is_file()
    with pytest.raises(ValueError, match="another configuration"):
        Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["x"], _config(steps=2, beta=5.0), tmp_path)
    (tmp_path / CHECKPOINT).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["x"], _config(steps=2), tmp_path)


def test_cancel_stops_the_run_and_keeps_the_last_checkpoint(tmp_path):
    seen = []
    aligner = Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["x"], _config(), tmp_path)
    with pytest.raises(Cancelled):
        aligner.run(progress=lambda r: seen.append(r.step), should_cancel=lambda: len(seen) >= 2)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert state["step"] == 2


def test_gradient_methods_refuse_a_non_differentiable_reward():
    objective = LinearReward(DIRECTION)
    objective.differentiable = False
    with pytest.raises(ValueError, match="differentiable"):
        Aligner(GaussianToyModel(), objective, ["x"], _config(method="nabla"))
    Aligner(GaussianToyModel(), objective, ["x"], _config(method="ddpo"))  # DDPO needs no gradient


@pytest.mark.parametrize("bad", [dict(method="sgd"), dict(subsample=0.0), dict(beta=float("nan")), dict(lora_rank=0),
                                 dict(reward_weighting="cube"), dict(flow_network=True, method="ddpo"),
                                 dict(checkpoint_every=0), dict(epochs=0), dict(epochs=1.5)])
def test_bad_configuration_is_a_clear_error(bad):
    with pytest.raises(ValueError):
        AlignConfig(**bad)


def test_config_round_trips_through_json():
    cfg = _config(method="refl", lora_targets=("proj_out",))
    assert AlignConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_train_on_previous_round_makes_the_trust_region_act_from_the_first_update():
    """One update per round: on its own samples the policy equals the recorded one at the update, so
    the trust-region term is 0; on the previous round's samples the policy has moved since."""
    def trust_terms(previous):
        al = Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["x"],
                     _config(steps=3, micro_batch=8, train_on_previous=previous))
        return [al.train_step().parts["loss_trust"] for _ in range(3)]

    own, previous = trust_terms(False), trust_terms(True)
    assert max(own) < 1e-10
    assert previous[0] < 1e-10 and min(previous[1:]) > 1e-8


def test_pending_round_with_cameras_survives_a_safe_checkpoint_load(tmp_path):
    from engine.align.trainer import SampledRound
    from engine.render.cameras import OrbitConfig, orbit_cameras

    cams = orbit_cameras(OrbitConfig(views=3, random_azimuth=True), torch.Generator().manual_seed(1))
    pending = SampledRound(["a red cube"], cams, {"latents": torch.randn(3, 1, 2)}, torch.tensor([0.5]))
    torch.save({"pending": pending.to_state()}, tmp_path / "c.pt")
    back = SampledRound.from_state(torch.load(tmp_path / "c.pt", weights_only=True)["pending"])
    assert back.prompts == pending.prompts and torch.equal(back.views.azimuth, cams.azimuth)
    assert torch.equal(back.tensors["latents"], pending.tensors["latents"]) and torch.equal(back.rewards, pending.rewards)


def test_resume_compares_everything_that_decides_the_result(tmp_path):
    """Another reward expression, other prompts or other base weights refuse the checkpoint, naming
    what differs; the old run's files stay as they were."""
    Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["x"], _config(steps=2), tmp_path, identity={"reward": "palette"}).run()
    before = (tmp_path / CHECKPOINT).read_bytes(), (tmp_path / LOG).read_text()
    with pytest.raises(ValueError, match=r"another configuration \(reward: 'dnc' here, 'palette' in the checkpoint\)"):
        Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["x"], _config(steps=2), tmp_path, identity={"reward": "dnc"})
    with pytest.raises(ValueError, match=r'\(prompts: \["y"\] here, \["x"\] in the checkpoint\)'):
        Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["y"], _config(steps=2), tmp_path, identity={"reward": "palette"})
    other = GaussianToyModel()
    with torch.no_grad():
        next(other.denoiser.parameters()).add_(1.0)
    with pytest.raises(ValueError, match=r"\(weights: '[0-9a-f]{16}' here, '[0-9a-f]{16}' in the checkpoint\)"):
        Aligner(other, LinearReward(DIRECTION), ["x"], _config(steps=2), tmp_path, identity={"reward": "palette"})
    assert ((tmp_path / CHECKPOINT).read_bytes(), (tmp_path / LOG).read_text()) == before
    same = Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["x"], _config(steps=2), tmp_path, identity={"reward": "palette"})
    assert same.step == 2


def test_a_fresh_run_refuses_a_folder_with_another_runs_files_and_replaces_its_own(tmp_path):
    Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["x"], _config(steps=2), tmp_path, identity={"reward": "a"}).run()
    before = (tmp_path / CHECKPOINT).read_bytes()
    with pytest.raises(ValueError, match="of a run that was written with another configuration"):
        Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["x"], _config(steps=2), tmp_path, resume=False, identity={"reward": "b"})
    assert (tmp_path / CHECKPOINT).read_bytes() == before
    again = Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["x"], _config(steps=2), tmp_path, resume=False, identity={"reward": "a"})
    assert again.step == 0 and not (tmp_path / CHECKPOINT).exists()  # its own old files: replaced
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / LOG).write_text('{"step": 1}\n')
    with pytest.raises(ValueError, match="another run"):
        Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["x"], _config(steps=2), stray, resume=False)
    assert (stray / LOG).read_text() == '{"step": 1}\n'


def test_checkpoints_written_before_run_identities_still_resume(tmp_path):
    Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["x"], _config(steps=2), tmp_path).run()
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    del state["identity"]
    torch.save(state, tmp_path / CHECKPOINT)
    assert Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["x"], _config(steps=2), tmp_path).step == 2
    with pytest.raises(ValueError, match=r"\(beta: 5.0 here, 2.0 in the checkpoint\)"):
        Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["x"], _config(steps=2, beta=5.0), tmp_path)


def test_official_preset_runs_and_resumes_like_any_config(tmp_path):
    from engine.align.config import preset

    cfg = preset("official", beta=2.0, lr=1e-2, lora_rank=2, steps=2, trajectories=4, micro_batch=2, accumulate=2,
                 lora_conditioning=False, sampler=SamplerConfig(scheduler="dpmsolver-sde", final_sigmas="sigma_min", steps=6))
    assert cfg.reward_weighting == "squared" and cfg.train_on_previous and cfg.cameras_per_transition
    log = Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["x"], cfg, tmp_path).run()
    assert len(log) == 2 and all(math.isfinite(r["loss"]) for r in log)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("fast")


def _straight_lora(steps, **kw):
    model = GaussianToyModel()
    Aligner(model, LinearReward(DIRECTION), ["x"], _config(steps=steps, **kw)).run()
    return lora_state_dict(model)


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("interrupt", ["cancel", "ctrl-c"])
def test_an_interrupt_mid_round_checkpoints_the_last_completed_round(tmp_path, interrupt):
    """checkpoint_every=10 would keep nothing of 3 rounds: an interrupt in round 4, after that round's
    first optimizer step (two micro-batch updates per round), still writes round 3's weights, and the
    resumed run ends bit for bit where a straight 6-round run ends."""
    cfg = dict(checkpoint_every=10, micro_batch=4)  # 8 trajectories: 2 updates per round
    calls = {"n": 0}

    def should_cancel():
        # the sampler polls once per sampling step (10) and train_step before each micro-batch (2): in
        # round 4 the poll after 10 sampling polls and one micro-batch comes after its first update
        calls["n"] += 1
        if calls["n"] == 3 * 12 + 12:
            if interrupt == "ctrl-c":
                raise KeyboardInterrupt
            return True
        return False

    model = GaussianToyModel()
    aligner = Aligner(model, LinearReward(DIRECTION), ["x"], _config(**cfg), tmp_path)
    with pytest.raises(Cancelled if interrupt == "cancel" else KeyboardInterrupt) as info:
        aligner.run(should_cancel=should_cancel)
    assert aligner.step == 3 and any("round 3 of 6" in n for n in info.value.__notes__)
    assert _same(lora_state_dict(model), _straight_lora(3, **cfg))  # the unfinished round was rolled back
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["step"] == 3
    assert [json.loads(l)["step"] for l in (tmp_path / LOG).read_text().splitlines()] == [1, 2, 3]
    resumed_model = GaussianToyModel()
    resumed = Aligner(resumed_model, LinearReward(DIRECTION), ["x"], _config(**cfg), tmp_path)
    assert resumed.step == 3
    resumed.run()
    assert _same(lora_state_dict(resumed_model), _straight_lora(6, **cfg))


def test_ctrl_c_between_rounds_checkpoints_the_round_just_done(tmp_path):
    def stop(record):
        if record.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["x"], _config(checkpoint_every=10), tmp_path).run(progress=stop)
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["step"] == 3


def test_more_rounds_continue_a_finished_run_and_the_interval_may_change(tmp_path):
    """A finished 2-round run asked for 4 rounds (and another checkpoint interval) continues from round 2
    and ends where a straight 4-round run ends; fewer rounds than done, or another lr, are refused
    with both values named."""
    Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["x"], _config(steps=2), tmp_path).run()
    model = GaussianToyModel()
    more = Aligner(model, LinearReward(DIRECTION), ["x"], _config(steps=4, checkpoint_every=3), tmp_path)
    assert more.step == 2
    log = more.run()
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert [json.loads(l)["step"] for l in (tmp_path / LOG).read_text().splitlines()] == [1, 2, 3, 4]
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["step"] == 4
    assert _same(lora_state_dict(model), _straight_lora(4))
    with pytest.raises(ValueError, match="holds round 4, more than the 3 rounds"):
        Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["x"], _config(steps=3), tmp_path)
    with pytest.raises(ValueError, match=r"\(lr: 0.005 here, 0.01 in the checkpoint\)"):
        Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["x"], _config(steps=6, lr=5e-3), tmp_path)


def test_epochs_repeat_a_rounds_updates_and_older_runs_without_the_setting_resume(tmp_path):
    """epochs=3 makes each round's updates three times over the same trajectories (2 updates a round
    here: 6 optimizer steps), moves the LoRA further than one pass, and logs the mean loss over the
    passes. A run written before the setting existed resumes with it at its default, 1."""
    def steps_and_lora(epochs, rounds=1):
        model = GaussianToyModel()
        aligner = Aligner(model, LinearReward(DIRECTION), ["x"], _config(steps=rounds, epochs=epochs))
        count = {"n": 0}
        step = aligner.optimizer.step

        def counted(*a, **k):
            count["n"] += 1
            return step(*a, **k)

        aligner.optimizer.step = counted
        log = aligner.run()
        assert all(math.isfinite(r["loss"]) for r in log)
        return count["n"], torch.cat([v.flatten() for v in lora_state_dict(model).values()])

    (_, init), (one, lora_one), (three, lora_three) = steps_and_lora(1, rounds=0), steps_and_lora(1), steps_and_lora(3)
    assert (one, three) == (2, 6)
    assert (lora_three - init).norm() > 1.5 * (lora_one - init).norm()

    Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["x"], _config(steps=2), tmp_path).run()
    run = json.loads((tmp_path / "run.json").read_text())
    del run["config"]["epochs"]  # as an older version wrote it
    (tmp_path / "run.json").write_text(json.dumps(run))
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    identity = json.loads(state["identity"])
    del identity["config"]["epochs"]
    state["identity"] = json.dumps(identity)
    torch.save(state, tmp_path / CHECKPOINT)
    assert Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["x"], _config(steps=3), tmp_path).run()[-1]["step"] == 3
    with pytest.raises(ValueError, match=r"\(epochs: 2 here, 1 in the checkpoint\)"):
        Aligner(GaussianToyModel(), LinearReward(DIRECTION), ["x"], _config(steps=4, epochs=2), tmp_path)
