"""The worker process end to end, driven through WorkerClient as Blender and batch mode drive it."""
import json
import os
import signal
import sys
import time

import numpy as np
import pytest

from engine.geometry.mesh import load_mesh
from engine.worker import JobCancelled, JobError, WorkerClient, WorkerNotRunning, run_job_sync

# One torch thread per worker: the test machine's cores are shared.
ENV = {"OMP_NUM_THREADS": "1"}
LONG = {"prompt": "a blue torus", "count": 1, "steps": 1000}  # ~ten seconds or more: to be cancelled


TERMINAL = ("result", "error", "cancelled")


class Inbox:
    """Reads a client's messages, keeping every one, so waiting for one job loses no other's."""

    def __init__(self, client):
        self.client = client
        self.seen = []

    def _next(self, deadline):
        msg = self.client.wait_message(max(0.0, deadline - time.monotonic()))
        assert msg is not None, f"timed out; got {self.seen}; worker log:\n{self.client.stderr_tail()}"
        self.seen.append(msg)
        return msg

    def until(self, job_id, predicate, timeout=120.0):
        """The next message of ``job_id`` that satisfies ``predicate`` (which must come before its end)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self._next(deadline)
            if msg.get("id") == job_id:
                if predicate(msg):
                    return msg
                assert msg["type"] not in TERMINAL, msg

    def done(self, job_ids, timeout=120.0):
        """Every message of ``job_ids`` in arrival order, once each has its terminal message."""
        job_ids = set(job_ids)
        deadline = time.monotonic() + timeout
        while {m.get("id") for m in self.seen if m["type"] in TERMINAL} & job_ids != job_ids:
            self._next(deadline)
        return [m for m in self.seen if m.get("id") in job_ids]


def messages_until_done(client, job_ids, timeout=120.0):
    return Inbox(client).done(job_ids, timeout)


def sampling_started(msg):
    return msg["type"] == "progress" and "step" in msg["message"]


def no_leftovers(folder):
    return [p.name for p in folder.iterdir() if ".partial-" in p.name]


@pytest.fixture(scope="module")
def client():
    c = WorkerClient(env=ENV).start()
    yield c
    c.stop()


def test_ready_message_describes_the_worker(client):
    deadline = time.monotonic() + 60
    polled = []
    while client.info is None and time.monotonic() < deadline:
        t0 = time.perf_counter()
        polled += client.poll()  # while the worker is still importing torch: returns at once
        assert time.perf_counter() - t0 < 0.05
        time.sleep(0.05)
    info = client.info
    assert info in polled + client.poll()  # the ready message also comes through poll
    assert info["type"] == "ready" and info["version"] == 1 and info["pid"] == client._session.proc.pid
    assert {"generate", "align"} <= set(info["jobs"]) and "_crash" not in info["jobs"]
    assert 0 < client.ready_after_s < 60


def test_generate_writes_meshes_and_reports_rising_progress(client, tmp_path):
    out = tmp_path / "assets"
    job = client.submit("generate", {"prompt": "a red cube", "count": 2, "seed": 5, "steps": 3, "out_dir": out})
    got = messages_until_done(client, [job])
    assert got[-1]["type"] == "result", got[-1]
    progress = [m["fraction"] for m in got if m["type"] == "progress"]
    assert len(progress) >= 2 and progress == sorted(progress) and progress[-1] == 1.0
    data = got[-1]["data"]
    assert data["out_dir"] == str(out) and [a["seed"] for a in data["assets"]] == [5, 6]
    assert set(data["timings"]) >= {"load_s", "sample_s", "mesh_s", "export_s", "total_s"}
    for asset in data["assets"]:
        assert asset["prompt"] == "a red cube"
        with np.load(out / asset["files"]["npz"]) as f:
            v, faces, colors = f["vertices"], f["faces"], f["colors"]
        assert v.dtype == np.float32 and v.ndim == 2 and v.shape[1] == 3 and len(v) == asset["vertices"] > 50
        assert faces.dtype == np.int32 and faces.shape == (asset["faces"], 3) and 0 <= faces.min() and faces.max() < len(v)
        assert colors.shape == (len(v), 4) and np.all((0 <= colors) & (colors <= 1))
        assert np.abs(v).max() < 1.05  # the engine's [-1, 1]^3 box (+ the closing shell: one 48^3 voxel)
        glb = load_mesh(out / asset["files"]["glb"])
        np.testing.assert_allclose(glb.vertices, v, atol=1e-5)  # same mesh, same Z-up frame after import
    assert json.loads((out / "manifest.json").read_text()) == {k: v for k, v in data.items() if k != "out_dir"}
    assert no_leftovers(tmp_path) == []


def test_bad_prompt_is_bad_input_with_the_vocabulary_and_writes_nothing(client, tmp_path):
    job = client.submit("generate", {"prompt": "a shiny cube", "out_dir": tmp_path / "o"})
    (msg,) = messages_until_done(client, [job])
    assert msg["type"] == "error" and msg["kind"] == "bad_input"
    assert "'shiny' is not in the vocabulary" in msg["message"] and "torus" in msg["message"]
    assert list(tmp_path.iterdir()) == []


def test_malformed_lines_get_protocol_errors_and_the_worker_keeps_serving(client, tmp_path):
    stdin = client._session.proc.stdin  # raw access: the client itself never writes such lines
    stdin.write(b"this is not json\n")
    stdin.write(b'{"type": "job", "id": "half-a-job"}\n')
    stdin.flush()
    errors = []
    while len(errors) < 2:
        msg = client.wait_message(30)
        assert msg is not None
        if msg["type"] == "error":
            errors.append(msg)
    assert [(e["kind"], e["id"]) for e in errors] == [("protocol", None), ("protocol", "half-a-job")]
    assert "not JSON" in errors[0]["message"] and "'kind'" in errors[1]["message"]
    dup = b'{"type": "job", "id": "dup", "kind": "generate", "params": {"prompt": "a red cube", "steps": 2, "out_dir": "%s"}}\n'
    stdin.write(dup % str(tmp_path / "dup").encode() * 2)  # the same id twice: the second is refused
    stdin.flush()
    inbox = Inbox(client)
    refused = inbox.until(None, lambda m: m["type"] == "error")
    assert refused["kind"] == "protocol" and "'dup' is already queued or running" in refused["message"]
    assert inbox.done(["dup"])[-1]["type"] == "result"  # the first one is unaffected
    unknown = client.submit("teleport", {})
    (msg,) = messages_until_done(client, [unknown])
    assert msg["kind"] == "protocol" and "unknown job kind 'teleport'" in msg["message"]
    job = client.submit("generate", {"prompt": "a green cone", "steps": 2, "out_dir": tmp_path / "ok"})
    assert messages_until_done(client, [job])[-1]["type"] == "result"
    assert client.alive


def test_a_deeply_nested_line_is_a_protocol_error_and_closing_stdin_ends_the_worker(tmp_path):
    """100,000 nested brackets once killed the reader thread (RecursionError): the worker then never
    answered again and ignored the end of its stdin."""
    client = WorkerClient(env=ENV).start()
    try:
        proc = client._session.proc
        os.set_blocking(proc.stdin.fileno(), True)  # the client's pipe is non-blocking: take the whole line
        proc.stdin.write(b"[" * 100_000 + b"]" * 100_000 + b"\n")
        proc.stdin.flush()
        msg = client.wait_message(60)
        while msg is not None and msg["type"] == "ready":
            msg = client.wait_message(60)
        assert msg is not None and msg["type"] == "error" and msg["kind"] == "protocol", msg
        assert "nested too deeply" in msg["message"]
        job = client.submit("generate", {"prompt": "a red cube", "steps": 2, "out_dir": tmp_path / "ok"})
        assert messages_until_done(client, [job])[-1]["type"] == "result"  # the worker carries on
        proc.stdin.close()
        assert proc.wait(20) == 0  # end of stdin ends the worker
    finally:
        client.stop()


def test_cancel_stops_a_running_job_within_seconds_and_leaves_no_files(client, tmp_path):
    out = tmp_path / "never"
    job = client.submit("generate", {**LONG, "out_dir": out})
    inbox = Inbox(client)
    inbox.until(job, sampling_started)
    t0 = time.monotonic()
    client.cancel(job)
    msg = inbox.until(job, lambda m: m["type"] in TERMINAL, timeout=30)
    elapsed = time.monotonic() - t0
    assert msg["type"] == "cancelled" and elapsed < 5.0, (msg, elapsed)
    assert not out.exists() and no_leftovers(tmp_path) == []
    assert client.pending == []


def test_jobs_run_in_submission_order_and_a_queued_job_can_be_cancelled(client, tmp_path):
    long_job = client.submit("generate", {**LONG, "out_dir": tmp_path / "long"})
    dropped = client.submit("generate", {"prompt": "a red cube", "steps": 2, "out_dir": tmp_path / "dropped"})
    first = client.submit("generate", {"prompt": "a red cube", "steps": 2, "out_dir": tmp_path / "first"})
    second = client.submit("generate", {"prompt": "a blue sphere", "steps": 2, "out_dir": tmp_path / "second"})
    client.cancel(dropped)
    inbox = Inbox(client)
    inbox.until(long_job, sampling_started)
    client.cancel(long_job)
    got = inbox.done([long_job, dropped, first, second])
    order = [(m["id"], m["type"]) for m in got if m["type"] != "progress"]
    assert order == [(dropped, "cancelled"), (long_job, "cancelled"), (first, "result"), (second, "result")]
    ids_in_order = [m["id"] for m in got if m["id"] in (first, second)]
    assert ids_in_order == sorted(ids_in_order, key=[first, second].index)  # no interleaving: one at a time
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "second"]


def test_poll_never_blocks(client, tmp_path):
    job = client.submit("generate", {"prompt": "a yellow cylinder", "count": 2, "steps": 30, "out_dir": tmp_path / "o"})
    worst, seen, deadline = 0.0, [], time.monotonic() + 120
    while not any(m.get("id") == job and m["type"] == "result" for m in seen):
        t0 = time.perf_counter()
        seen += client.poll()
        worst = max(worst, time.perf_counter() - t0)
        assert time.monotonic() < deadline
        time.sleep(0.002)
    assert any(m["type"] == "progress" for m in seen)
    assert worst < 0.05, f"poll() took {worst * 1000:.1f} ms"


def test_run_job_sync_returns_data_and_raises_job_errors(client, tmp_path):
    seen = []
    data = run_job_sync(client, "generate", {"prompt": "a white pyramid", "steps": 2, "out_dir": tmp_path / "a"}, on_message=seen.append)
    assert os.path.isfile(os.path.join(data["out_dir"], data["assets"][0]["files"]["npz"]))
    assert [m["type"] for m in seen][-1] == "result" and any(m["type"] == "progress" for m in seen)
    with pytest.raises(JobError) as info:
        run_job_sync(client, "generate", {"prompt": "a red cube", "count": 0, "out_dir": tmp_path / "b"})
    assert info.value.kind == "bad_input" and "count" in info.value.message

    def cancel_when_sampling(msg):
        if sampling_started(msg):
            client.cancel(msg["id"])

    with pytest.raises(JobCancelled):
        run_job_sync(client, "generate", {**LONG, "out_dir": tmp_path / "c"}, on_message=cancel_when_sampling)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        run_job_sync(client, "generate", {**LONG, "out_dir": tmp_path / "d"}, timeout=1.0)
    assert time.monotonic() - t0 < 10
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_bad_align_params_and_unavailable_devices_come_back_as_bad_input(client, tmp_path):
    """What the add-on shows in its popup: one line naming the field, or the devices this torch offers."""
    jobs = {
        client.submit("align", {"reward": "dnc", "out_dir": "relative/run"}): "out_dir must be an absolute path, got 'relative/run'",
        client.submit("align", {"reward": "dnc", "steps": "3", "out_dir": tmp_path / "a"}): "steps must be an integer, got '3'",
        client.submit("align", {"reward": "dnc", "device": "cuda:99", "out_dir": tmp_path / "b"}): "device 'cuda:99' is not available",
        client.submit("generate", {"prompt": "a red cube", "device": "cuda:99", "out_dir": tmp_path / "c"}): "device 'cuda:99' is not available",
    }
    done = [m for m in messages_until_done(client, list(jobs)) if m["type"] in TERMINAL]
    for msg in done:
        assert msg["type"] == "error" and msg["kind"] == "bad_input", msg
        assert msg["message"].startswith(jobs[msg["id"]]) and "\n" not in msg["message"]
    device_errors = {m["message"] for m in done if "cuda:99" in m["message"]}
    assert len(device_errors) == 1 and "offers auto, cpu" in device_errors.pop()  # the same line for both kinds
    assert list(tmp_path.iterdir()) == []


def test_bad_nested_align_settings_are_bad_input_before_any_work(client, tmp_path):
    """These once came back as ``runtime`` after the run had started (and left ``run.json`` behind)."""
    base = {"reward": "dnc", "steps": 1, "trajectories": 1, "eval_seeds": 1, "prompts": ["a red cube"]}
    jobs = {
        client.submit("align", {**base, "extra": {"sampler": "ddim"}, "out_dir": tmp_path / "a"}):
            "extra.sampler must be an object of SamplerConfig fields",
        client.submit("align", {**base, "extra": {"orbit": {"views": 0}}, "out_dir": tmp_path / "b"}):
            "orbit.views must be in 1..64, got 0",
        client.submit("align", {**base, "extra": {"render": {"resolution": -4}}, "out_dir": tmp_path / "c"}):
            "render.resolution must be in 1..4096, got -4",
    }
    done = [m for m in messages_until_done(client, list(jobs)) if m["type"] in TERMINAL]
    for msg in done:
        assert msg["type"] == "error" and msg["kind"] == "bad_input", msg
        assert msg["message"].startswith(jobs[msg["id"]]), msg
    assert list(tmp_path.iterdir()) == []


def test_an_align_job_on_a_folder_another_run_holds_is_refused(client, tmp_path):
    from engine.fileio import folder_lock

    out = tmp_path / "run"
    with folder_lock(out, "alignment run", ".align.lock"):
        job = client.submit("align", {"reward": "dnc", "steps": 1, "out_dir": out})
        (msg,) = messages_until_done(client, [job])
    assert msg["type"] == "error" and msg["kind"] == "bad_input", msg
    assert f"is in use by another alignment run (process {os.getpid()})" in msg["message"]
    assert not out.exists()


def test_run_job_sync_with_an_interpreter_path_runs_a_worker_for_one_job(tmp_path):
    data = run_job_sync(sys.executable, "generate", {"prompt": "a purple sphere", "steps": 2, "out_dir": tmp_path / "a"})
    assert [a["seed"] for a in data["assets"]] == [0] and os.path.isfile(tmp_path / "a" / data["assets"][0]["files"]["glb"])


def test_a_crash_fails_the_running_and_queued_jobs_and_the_client_can_restart(tmp_path):
    client = WorkerClient(env={**ENV, "ENGINE_WORKER_TEST_JOBS": "1"}).start()
    try:
        crash = client.submit("_crash", {"code": 3})
        queued = client.submit("generate", {"prompt": "a red cube", "steps": 2, "out_dir": tmp_path / "q"})
        got = messages_until_done(client, [crash, queued], timeout=60)
        errors = {m["id"]: m for m in got if m["type"] == "error"}
        assert errors[crash]["kind"] == "crash" and errors[crash]["returncode"] == 3
        assert "exited with code 3 while this job was running" in errors[crash]["message"]
        assert "_crash: exiting with code 3" in errors[crash]["stderr_tail"]  # the worker's last words
        assert errors[queued]["kind"] == "crash" and "queued" in errors[queued]["message"]
        assert not client.alive and client.returncode == 3
        with pytest.raises(WorkerNotRunning):
            client.submit("generate", {"prompt": "a red cube", "out_dir": tmp_path / "x"})

        client.start()  # a fresh worker after a crash, e.g. from a "restart worker" button
        job = client.submit("generate", {**LONG, "out_dir": tmp_path / "after"})
        inbox = Inbox(client)
        inbox.until(job, sampling_started)
        t0 = time.monotonic()
        code = client.stop(timeout=10)
        assert code == 0 and time.monotonic() - t0 < 10
        assert [m["type"] for m in inbox.done([job], timeout=5)][-1] == "cancelled"
        assert not (tmp_path / "after").exists() and no_leftovers(tmp_path) == []
    finally:
        client.stop()


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_a_frozen_worker_does_not_block_submit_and_sigterm_cancels_cleanly(tmp_path):
    client = WorkerClient(env=ENV).start()
    try:
        # A frozen worker (here: stopped) fills its stdin pipe; submit gives up instead of hanging.
        proc = client._session.proc
        proc.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        with pytest.raises(WorkerNotRunning, match="stopped answering"):
            client.submit("generate", {"prompt": "a red cube", "pad": "x" * 300_000, "out_dir": tmp_path / "x"})
        assert time.monotonic() - t0 < 3 and client.pending == []
        proc.send_signal(signal.SIGCONT)
        while not proc.stdin.write(b"\n"):  # end the cut-off line: one protocol error, then back to normal
            time.sleep(0.01)

        job = client.submit("generate", {**LONG, "out_dir": tmp_path / "a"})
        queued = client.submit("generate", {"prompt": "a red cube", "out_dir": tmp_path / "b"})
        inbox = Inbox(client)
        inbox.until(job, sampling_started)
        client._session.proc.send_signal(signal.SIGTERM)
        got = inbox.done([job, queued], timeout=30)
        assert sorted(m["type"] for m in got if m["type"] != "progress") == ["cancelled", "cancelled"]
        assert client._session.proc.wait(10) == 128 + signal.SIGTERM
        assert list(tmp_path.iterdir()) == []
    finally:
        client.stop()


@pytest.mark.parametrize("mode", ["spin", "sleep"])
def test_a_job_that_ignores_cancel_is_interrupted_within_seconds_and_the_worker_serves_on(tmp_path, mode):
    """A reward plugin stuck in a Python loop or a sleep never reaches a cancellation point; the
    worker interrupts it (engine.worker.server.INTERRUPT_AFTER_S) instead of ignoring the cancel."""
    client = WorkerClient(env={**ENV, "ENGINE_WORKER_TEST_JOBS": "1"}).start()
    try:
        job = client.submit("_stuck", {"mode": mode})
        inbox = Inbox(client)
        inbox.until(job, lambda m: m["type"] == "progress", timeout=60)
        t0 = time.monotonic()
        client.cancel(job)
        assert [m["type"] for m in inbox.done([job], timeout=10)][-1] == "cancelled"
        assert time.monotonic() - t0 < 3.0
        assert client.alive  # interrupted, not killed: the next job runs in the same worker
        after = client.submit("generate", {"prompt": "a red cube", "steps": 2, "out_dir": tmp_path / "after"})
        assert [m["type"] for m in inbox.done([after], timeout=60)][-1] == "result"
    finally:
        client.stop()


def test_an_align_job_with_a_reward_plugin_stuck_in_a_loop_cancels_within_seconds(tmp_path):
    plugin = tmp_path / "stuck.py"
    plugin.write_text("import torch\n\ndef reward(images, alpha, depth, normal, prompts):\n    while True:\n        pass\n")
    client = WorkerClient(env=ENV).start()
    try:
        job = client.submit("align", {"out_dir": tmp_path / "run", "reward": "plugin", "reward_options": {"plugin": {"path": str(plugin)}},
                                      "method": "ddpo", "steps": 2, "trajectories": 1, "eval_seeds": 1, "prompts": ["a red cube"],
                                      "extra": {"render": {"resolution": 8, "samples": 8}, "orbit": {"views": 1}, "sampler": {"steps": 2}}})
        inbox = Inbox(client)
        inbox.until(job, lambda m: m["type"] == "progress" and "scoring" in m["message"], timeout=120)
        time.sleep(0.5)  # inside the plugin by now
        t0 = time.monotonic()
        client.cancel(job)
        assert [m["type"] for m in inbox.done([job], timeout=10)][-1] == "cancelled"
        assert time.monotonic() - t0 < 3.0 and client.alive
    finally:
        client.stop()


def test_cancel_of_an_align_job_keeps_a_checkpoint_of_its_last_round_and_the_job_resumes_from_it(client, tmp_path):
    """Issue 22: Cancel saved nothing between checkpoints (every 10 rounds); now the last completed
    round is checkpointed, and the same job submitted again (asking one round more) resumes there."""
    import json

    import torch

    params = {"out_dir": tmp_path / "run", "reward": "palette", "reward_options": {"palette": {"palette": "#ff8800"}},
              "steps": 200, "trajectories": 1, "eval_seeds": 1, "prompts": ["a red cube"],
              "extra": {"render": {"resolution": 8, "samples": 8}, "orbit": {"views": 1}, "sampler": {"steps": 2}}}
    job = client.submit("align", params)
    inbox = Inbox(client)
    inbox.until(job, lambda m: m["type"] == "progress" and m["message"].startswith("round 2/"), timeout=180)
    client.cancel(job)
    assert [m["type"] for m in inbox.done([job], timeout=30)][-1] == "cancelled"
    done = [json.loads(l)["step"] for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(done) >= 2 and torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == len(done)
    again = client.submit("align", {**params, "steps": len(done) + 1})
    got = inbox.done([again], timeout=180)
    assert any(m["type"] == "progress" and m["message"] == f"resuming from round {len(done)} of {len(done) + 1}" for m in got)
    assert got[-1]["type"] == "result" and got[-1]["data"]["rounds"] == len(done) + 1, got[-1]


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_a_worker_killed_mid_export_leaves_no_staging_folder(tmp_path):
    """Issue 22: a SIGKILL during export left the hidden ``.<out>.partial-*`` folder until a later
    job's sweep an hour on. The client sees the crash and removes that job's folder at once."""
    client = WorkerClient(env=ENV).start()
    try:
        out = tmp_path / "assets"
        job = client.submit("generate", {"prompt": "a red cube", "count": 16, "steps": 2, "out_dir": out})
        inbox = Inbox(client)
        inbox.until(job, lambda m: m["type"] == "progress" and m["message"].startswith("wrote "), timeout=300)
        assert len(no_leftovers(tmp_path)) == 1  # exporting now
        client._session.proc.send_signal(signal.SIGKILL)
        (msg,) = [m for m in inbox.done([job], timeout=30) if m["type"] == "error"]
        assert msg["kind"] == "crash" and msg["returncode"] == -signal.SIGKILL
        assert no_leftovers(tmp_path) == [] and not out.exists()
    finally:
        client.stop()
