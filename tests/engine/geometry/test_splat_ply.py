import math
import os
import stat

import numpy as np
import pytest
import torch

from engine.geometry.splat_ply import PROPERTIES, SH_C0, read_3dgs_ply, write_3dgs_ply
from engine.render.types import GaussianSplats


def random_splats(n: int = 50, seed: int = 0) -> GaussianSplats:
    g = torch.Generator().manual_seed(seed)
    return GaussianSplats(
        means=torch.rand(1, n, 3, generator=g) * 2 - 1,
        quats=torch.nn.functional.normalize(torch.randn(1, n, 4, generator=g), dim=-1),
        scales=torch.rand(1, n, 3, generator=g) * 0.05 + 1e-3,
        opacities=torch.rand(1, n, generator=g) * 0.98 + 0.01,
        colors=torch.rand(1, n, 3, generator=g),
    )


def parse_with_numpy(path):
    """An independent reader: the header as text, the body as a numpy record array."""
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    lines = data[:end].decode("ascii").splitlines()
    count = int(next(l for l in lines if l.startswith("element vertex")).split()[2])
    names = [l.split()[2] for l in lines if l.startswith("property")]
    types = {l.split()[1] for l in lines if l.startswith("property")}
    body = np.frombuffer(data, dtype=[(n, "<f4") for n in names], offset=end)
    return lines, names, types, count, body


def test_round_trip(tmp_path):
    splats = random_splats()
    path = write_3dgs_ply(tmp_path / "a.3dgs.ply", splats)
    back = read_3dgs_ply(path)
    for name in ("means", "quats", "colors"):
        np.testing.assert_allclose(getattr(back, name), getattr(splats, name), atol=1e-6)
    np.testing.assert_allclose(back.scales, splats.scales, rtol=1e-5)
    np.testing.assert_allclose(back.opacities, splats.opacities, atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["a.3dgs.ply"]  # no temporary file left


def test_header_names_order_and_binary_layout(tmp_path):
    splats = random_splats(7)
    path = write_3dgs_ply(tmp_path / "a.3dgs.ply", splats)
    lines, names, types, count, body = parse_with_numpy(path)
    assert lines[:3] == ["ply", "format binary_little_endian 1.0", "element vertex 7"]
    assert names == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                     "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"] == list(PROPERTIES)
    assert types == {"float"} and count == 7 and len(body) == 7
    assert path.stat().st_size == len("\n".join(lines)) + 1 + 7 * 17 * 4  # nothing after the records


def test_stored_numbers_are_logit_log_and_sh(tmp_path):
    splats = GaussianSplats(
        means=torch.tensor([[[0.1, -0.2, 0.3]]]), quats=torch.tensor([[[0.5, 0.5, -0.5, 0.5]]]),
        scales=torch.tensor([[[0.01, 0.02, 0.004]]]), opacities=torch.tensor([[0.8]]),
        colors=torch.tensor([[[1.0, 0.5, 0.0]]]))
    _, _, _, _, body = parse_with_numpy(write_3dgs_ply(tmp_path / "a.3dgs.ply", splats))
    r = body[0]
    assert (r["x"], r["y"], r["z"]) == pytest.approx((0.1, -0.2, 0.3))
    assert (r["nx"], r["ny"], r["nz"]) == (0.0, 0.0, 0.0)
    assert r["opacity"] == pytest.approx(math.log(0.8 / 0.2), abs=1e-6)
    assert (r["scale_0"], r["scale_1"], r["scale_2"]) == pytest.approx((math.log(0.01), math.log(0.02), math.log(0.004)))
    assert (r["f_dc_0"], r["f_dc_1"], r["f_dc_2"]) == pytest.approx((0.5 / SH_C0, 0.0, -0.5 / SH_C0), abs=1e-6)
    assert (r["rot_0"], r["rot_1"], r["rot_2"], r["rot_3"]) == pytest.approx((0.5, 0.5, -0.5, 0.5))  # w first
    assert SH_C0 == pytest.approx(0.5 / math.sqrt(math.pi))


def test_extremes_are_clamped_to_finite_numbers(tmp_path):
    splats = random_splats(3)
    splats.opacities[0] = torch.tensor([0.0, 1.0, 0.5])
    splats.scales[0, 0] = 0.0
    _, _, _, _, body = parse_with_numpy(write_3dgs_ply(tmp_path / "a.3dgs.ply", splats))
    assert all(np.isfinite(body[n]).all() for n in body.dtype.names)
    assert body["opacity"][0] < -13 and body["opacity"][1] > 13
    back = read_3dgs_ply(tmp_path / "a.3dgs.ply")
    assert back.opacities[0, 0] < 1e-5 and back.opacities[0, 1] > 1 - 1e-5
    assert 0 < back.scales[0, 0, 0] < 1e-9


@pytest.mark.parametrize("field", ["means", "quats", "scales", "opacities", "colors"])
def test_non_finite_input_is_refused_and_nothing_written(tmp_path, field):
    splats = random_splats(4)
    getattr(splats, field).view(-1)[2] = float("nan")
    with pytest.raises(ValueError, match=field):
        write_3dgs_ply(tmp_path / "a.3dgs.ply", splats)
    assert list(tmp_path.iterdir()) == []


def test_batch_other_than_one_is_refused(tmp_path):
    two = random_splats(4)
    two = GaussianSplats(*(torch.cat([t, t]) for t in (two.means, two.quats, two.scales, two.opacities, two.colors)))
    with pytest.raises(ValueError, match="one asset"):
        write_3dgs_ply(tmp_path / "a.3dgs.ply", two)


def test_file_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_3dgs_ply(tmp_path / "a.3dgs.ply", random_splats(2))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_reads_a_3dgs_training_file_with_extra_properties(tmp_path):
    """A file as 3DGS training writes it (SH degree 3: 45 f_rest_* between f_dc and opacity)."""
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *[f"f_rest_{i}" for i in range(45)],
             "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    rec = np.zeros(2, dtype=[(n, "<f4") for n in names])
    rec["x"] = [0.25, -0.5]
    rec["f_dc_1"] = [1.0, -1.0]
    rec["f_rest_3"] = 9.0
    rec["opacity"] = [0.0, 2.0]
    rec["scale_2"] = [math.log(0.03), 0.0]
    rec["rot_0"] = 1.0
    header = "ply\nformat binary_little_endian 1.0\ncomment from training\nelement vertex 2\n"
    header += "".join(f"property float {n}\n" for n in names) + "end_header\n"
    path = tmp_path / "point_cloud.ply"
    path.write_bytes(header.encode() + rec.tobytes())
    s = read_3dgs_ply(path)
    assert s.means[0, :, 0].tolist() == [0.25, -0.5]
    assert s.colors[0, :, 1].tolist() == pytest.approx([0.5 + SH_C0, 0.5 - SH_C0])
    assert s.opacities[0].tolist() == pytest.approx([0.5, 1 / (1 + math.exp(-2))])
    assert s.scales[0, 0, 2].item() == pytest.approx(0.03)
    assert s.quats[0, :, 0].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("text, words", [
    (b"ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nend_header\n", "binary_little_endian"),
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 0\nproperty float x\nend_header\n", "opacity"),
    (b"solid cube\n", "not a PLY"),
])
def test_other_files_are_clear_errors(tmp_path, text, words):
    path = tmp_path / "x.ply"
    path.write_bytes(text)
    with pytest.raises(ValueError, match=words):
        read_3dgs_ply(path)


def test_trimesh_reads_it_as_a_point_cloud_with_every_property(tmp_path):
    """A general PLY reader (trimesh's) parses the file: the centres as points, the rest by name."""
    import trimesh

    splats = random_splats(20)
    loaded = trimesh.load(write_3dgs_ply(tmp_path / "a.3dgs.ply", splats))
    assert isinstance(loaded, trimesh.PointCloud)
    np.testing.assert_array_equal(loaded.vertices, splats.means[0].numpy())
    raw = loaded.metadata["_ply_raw"]["vertex"]["data"]
    assert raw.dtype.names == PROPERTIES
    np.testing.assert_allclose(raw["rot_0"], splats.quats[0, :, 0].numpy())
