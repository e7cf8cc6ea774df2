import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from engine.worker import protocol
from engine.worker.protocol import ProtocolError

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    "message",
    [
        protocol.job("j1", "generate", {"prompt": "a red cube", "count": 2, "nested": {"a": [1, 2.5, None]}}),
        protocol.cancel("j1"),
        protocol.shutdown(),
    ],
)
def test_requests_round_trip(message):
    line = protocol.encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one message, one line
    assert protocol.decode_request(line) == message
    assert protocol.decode_request(line.decode()) == message


@pytest.mark.parametrize(
    "message",
    [
        protocol.ready(123, jobs=["generate"]),
        protocol.progress("j", 0.5, "step 1/2"),
        protocol.preview("j", "/tmp/a.png", "step 10"),
        protocol.result("j", {"assets": [{"mesh_path": "/x/é.npz"}]}),
        protocol.error("j", "line one\nline two", "bad_input"),
        protocol.cancelled("j"),
    ],
)
def test_events_round_trip(message):
    line = protocol.encode(message)
    assert line.isascii()  # non-ASCII text is escaped: safe whatever the pipe's encoding
    assert protocol.decode_event(line) == message


def test_progress_fraction_is_clamped_and_error_kind_checked():
    assert protocol.progress("j", 1.7)["fraction"] == 1.0
    assert protocol.progress("j", -0.2)["fraction"] == 0.0
    with pytest.raises(ValueError):
        protocol.error("j", "x", "oops")


def test_encode_rejects_what_is_not_strict_json():
    with pytest.raises(ValueError):
        protocol.encode(protocol.result("j", {"score": math.nan}))
    with pytest.raises(TypeError):
        protocol.encode(protocol.result("j", {"path": Path("/tmp")}))


@pytest.mark.parametrize(
    "line, job_id, words",
    [
        (b"not json\n", None, "not JSON"),
        (b"[1, 2]\n", None, "JSON object"),
        (b"\xff\xfe\n", None, "UTF-8"),
        (b'{"type": "launch", "id": "a"}\n', "a", "unknown message type"),
        (b'{"type": "cancel"}\n', None, "'id'"),
        (b'{"type": "job", "id": "a", "params": {}}\n', "a", "'kind'"),
        (b'{"type": "job", "id": "a", "kind": "generate", "params": [1]}\n', "a", "'params'"),
        (b'{"type": "job", "id": 7, "kind": "generate"}\n', None, "'id'"),
    ],
)
def test_malformed_requests_are_protocol_errors_with_the_id_when_readable(line, job_id, words):
    with pytest.raises(ProtocolError) as info:
        protocol.decode_request(line)
    assert info.value.job_id == job_id
    assert words in str(info.value)


def test_job_params_default_to_empty_and_extra_fields_are_dropped():
    msg = protocol.decode_request(json.dumps({"type": "job", "id": "a", "kind": "align", "x": 1}))
    assert msg == {"type": "job", "id": "a", "kind": "align", "params": {}}


def test_event_decoder_passes_unknown_types_through():
    assert protocol.decode_event('{"type": "heartbeat", "t": 1}') == {"type": "heartbeat", "t": 1}
    with pytest.raises(ProtocolError):
        protocol.decode_event('{"kind": "progress"}')


def test_client_side_imports_neither_torch_nor_bpy():
    # Blender's own process imports the client: it must stay light and bpy-free.
    code = "import sys, engine.worker, engine.worker.client; print(sorted(m for m in ('torch', 'bpy', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_line_nested_beyond_the_decoders_limit_is_a_protocol_error():
    deep = b'{"type": "job", "id": "deep", "kind": "generate", "params": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}\n"
    with pytest.raises(ProtocolError, match="nested too deeply"):
        protocol.decode_request(deep)
