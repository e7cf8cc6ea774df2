"""Cycles renders of engine meshes, with exactly the differentiable renderer's cameras.

Needs ``bpy`` (Blender as a Python module, or running inside Blender); it is imported lazily, so the
engine imports without it and :class:`CyclesUnavailable` says so when a render is asked for.

Conventions (shared with :mod:`engine.render.volume`):

* Cameras are the orbit cameras of :mod:`engine.render.cameras`. Each view's Blender camera gets
  ``matrix_world = camera_to_world(cameras)[v]`` unchanged and ``angle = fov`` with a horizontal
  sensor fit on a square ``resolution x resolution`` image, so pixel (row i, column j) of a Cycles
  image looks where pixel (i, j) of ``render_field`` looks (row 0 = top).
* Meshes are :class:`engine.geometry.mesh.Mesh`: world frame, Z up, sRGB vertex colours. They are
  built directly from the numpy arrays (``foreach_set``), smooth shaded, with the colours in a
  point-domain ``BYTE_COLOR`` attribute written as sRGB, feeding a Principled BSDF (roughness 0.6).
* Lighting imitates the volume renderer's "ambient + key light above the camera": a uniform white
  world (strength :data:`AMBIENT_STRENGTH`, lighting only) plus a sun shining from
  ``normalize(camera_back + 0.6 * Z)``, re-aimed for every view.
* Colour: "Standard" view transform (no AgX/Filmic tone mapping), so a surface facing the key light
  shows about its own sRGB colour. Output ``rgb`` is (B, V, 3, R, R) float32 sRGB display values in
  [0, 1] composited over ``background`` (straight alpha, in display space as the volume renderer
  does); ``alpha`` is (B, V, 1, R, R) pixel coverage. Empty meshes render as pure background with
  alpha 0 (1 with ``transparent=False``), without calling Cycles.

Every call builds a fresh scene (other scenes, including the window's, are not touched) and removes
every datablock it created afterwards, plus the temporary folder its PNGs went to. ``bpy`` is not
thread-safe: call this from the thread that imported ``bpy``.

Performance (Blender 5.0.1 bpy module, CPU device, 2 CPU cores shared with a training job, load
average ~8.5): 128 x 128 at 16 samples takes about 0.17 s per view for a ~2k-triangle 32^3
marching-cubes mesh (0.19 s for a ~9k-triangle 64^3 one; 64 samples ~0.6 s). Scene setup per call is
negligible; the first render of a process costs ~0.5 s more (kernel loading) and ``import bpy`` ~1 s.
Measured with::

    .venv/bin/python -c "import time, torch; from engine.models.embedded.procedural import *; \
from engine.geometry.mesh import extract_mesh; from engine.render.cameras import *; \
from engine.render.cycles import *; \
m = extract_mesh(field_volume(sample_spec(torch.Generator().manual_seed(0)), 32)); \
c = orbit_cameras(OrbitConfig(views=8)); render_meshes_cycles([m], c[:1]); \
t = time.perf_counter(); render_meshes_cycles([m], c); print((time.perf_counter() - t) / 8)"
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..geometry.blender_mesh import new_mesh
from ..geometry.mesh import srgb_to_linear
from .cameras import Cameras, camera_to_world

# Lighting, in linear units. The volume renderer shades in sRGB space: ``c * (0.35 + 0.65 cos)``.
# Cycles shades linear colour (``0.35 ** 2.2 ~= 0.1``), so a dim world stands in for the ambient
# term and the sun brings a surface facing it to about full brightness; a sun of strength S gives a
# white diffuse surface facing it a linear radiance of S / pi. The two values were fitted so mean
# foreground colours match render_field's to within ~0.03 (per-pixel mean abs. difference ~0.035)
# on white/red/green procedural shapes; Principled's specular lobe lifts dark channels a little.
AMBIENT_STRENGTH = 0.08
SUN_RADIANCE = 0.75  # linear radiance the sun alone gives a white Lambertian surface facing it
KEY_LIGHT_UP = 0.6  # as in engine.render.volume: light direction = camera back + 0.6 * world up
ROUGHNESS = 0.6
_NAME = "engine_cycles"
_ATTRIBUTE = "Col"


class CyclesUnavailable(RuntimeError):
    """Blender's Python module (``bpy``) is missing or cannot render with Cycles here."""


@dataclass(frozen=True)
class CyclesConfig:
    resolution: int = 128
    samples: int = 16
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)  # sRGB display colour behind objects
    # True: transparent film, ``alpha`` is coverage and ``rgb`` is composited over ``background``
    # here. False: Cycles draws ``background`` itself (camera rays only; it does not light the
    # scene) and ``alpha`` is all ones (empty meshes included).
    transparent: bool = True
    denoise: bool = False
    device: str = "CPU"  # "CPU" or "GPU" (the first of OptiX/CUDA/HIP/Metal/oneAPI that has a device)
    threads: int = 0  # 0 = Blender's automatic thread count
    # Also render the unshaded vertex colour (the volume renderer's ``albedo``, which colour rewards
    # read): a second pass per view with an emission material at :data:`ALBEDO_SAMPLES` samples.
    albedo: bool = False


@dataclass
class CyclesOutput:
    """``rgb`` (B, V, 3, R, R) float32 sRGB in [0, 1]; ``alpha`` (B, V, 1, R, R) float32 in [0, 1];
    ``albedo`` (B, V, 3, R, R) unshaded sRGB premultiplied by alpha (as the volume renderer's), or
    None unless asked for."""

    rgb: np.ndarray
    alpha: np.ndarray
    cameras: Cameras
    albedo: np.ndarray | None = None


def _import_bpy():
    try:
        import bpy  # noqa: PLC0415 - lazy on purpose: the engine must import without Blender
    except Exception as exc:  # ImportError, or a bpy wheel that fails to initialise
        raise CyclesUnavailable(
            "Cycles rendering needs Blender's Python module: run inside Blender, or `pip install bpy` "
            f"matching the Python version ({sys.version_info.major}.{sys.version_info.minor}); import failed: {exc}"
        ) from exc
    return bpy


def render_meshes_cycles(meshes: Sequence, cameras: Cameras, config: CyclesConfig = CyclesConfig()) -> CyclesOutput:
    """Render each of B meshes from each of the V ``cameras`` with Cycles: images (B, V, C, R, R)."""
    bpy = _import_bpy()
    if config.resolution < 1:
        raise ValueError("resolution must be >= 1")
    if config.samples < 1:
        raise ValueError("samples must be >= 1")
    res, n_views = config.resolution, len(cameras)
    bg = np.asarray(config.background, dtype=np.float32).reshape(3, 1, 1)
    rgb = np.empty((len(meshes), n_views, 3, res, res), dtype=np.float32)
    alpha = np.full((len(meshes), n_views, 1, res, res), 0.0 if config.transparent else 1.0, dtype=np.float32)
    rgb[:] = bg
    albedo = np.zeros_like(rgb) if config.albedo else None
    if not any(not m.is_empty for m in meshes) or n_views == 0:
        return CyclesOutput(rgb, alpha, cameras, albedo)

    c2w = camera_to_world(cameras).detach().cpu().double().numpy()
    fov = np.radians(cameras.fov.detach().cpu().double().numpy())
    images_before = {img.as_pointer() for img in bpy.data.images}
    created: list = []  # datablocks to remove, in creation order
    tmpdir = tempfile.mkdtemp(prefix="engine_cycles_")
    try:
        scene, camera, sun = _build_scene(bpy, config, created)
        material = _build_material(bpy, created)
        flat = _build_material(bpy, created, emission=True) if config.albedo else None
        out_path = os.path.join(tmpdir, "view.png")
        scene.render.filepath = out_path
        for b, mesh in enumerate(meshes):
            if mesh.is_empty:
                continue
            per_mesh: list = []  # freed after this mesh's views, so a big batch never piles up
            try:
                obj = _build_object(bpy, mesh, material, per_mesh)
                scene.collection.objects.link(obj)
                for v in range(n_views):
                    camera.matrix_world = _blender_matrix(c2w[v])
                    camera.data.angle = float(fov[v])
                    sun.matrix_world = _blender_matrix(_sun_matrix(c2w[v]))
                    _render(bpy, scene)
                    img = _read_png(out_path, res)
                    if config.transparent:
                        a = img[3:4]
                        rgb[b, v] = img[:3] * a + bg * (1.0 - a)
                        alpha[b, v] = a
                    else:
                        rgb[b, v] = img[:3]
                    if flat is not None:
                        albedo[b, v] = _render_albedo(bpy, scene, obj, material, flat, config, out_path)
            finally:
                _remove(bpy, per_mesh)
    finally:
        _remove(bpy, created)
        for img in list(bpy.data.images):  # e.g. "Render Result" if it did not exist before
            if img.as_pointer() not in images_before:
                bpy.data.images.remove(img)
        shutil.rmtree(tmpdir, ignore_errors=True)
    return CyclesOutput(rgb, alpha, cameras, albedo)


# The emission pass has no noise to average away: more samples only smooth the silhouette's edge.
ALBEDO_SAMPLES = 4


def _render_albedo(bpy, scene, obj, shaded, flat, config: CyclesConfig, out_path: str) -> np.ndarray:
    """(3, R, R) unshaded colour of ``obj`` from the scene's camera, premultiplied by coverage.

    An emission material of strength 1 under the "Standard" view transform shows each surface's
    stored sRGB colour exactly, whatever the lights; the film is transparent for this pass so the
    coverage comes with it.
    """
    saved = (scene.cycles.samples, scene.render.film_transparent)
    obj.data.materials[0] = flat
    scene.cycles.samples, scene.render.film_transparent = ALBEDO_SAMPLES, True
    try:
        _render(bpy, scene)
        img = _read_png(out_path, config.resolution)
    finally:
        obj.data.materials[0] = shaded
        scene.cycles.samples, scene.render.film_transparent = saved
    return img[:3] * img[3:4]


# --- scene construction ---------------------------------------------------------------------------


def _build_scene(bpy, config: CyclesConfig, created: list):
    scene = bpy.data.scenes.new(_NAME)
    created.append(scene)
    r = scene.render
    r.engine = "CYCLES"
    r.resolution_x = r.resolution_y = config.resolution
    r.resolution_percentage = 100
    r.pixel_aspect_x = r.pixel_aspect_y = 1.0
    r.film_transparent = config.transparent
    r.use_compositing = False
    r.use_sequencer = False
    r.use_persistent_data = False
    r.threads_mode = "FIXED" if config.threads > 0 else "AUTO"
    if config.threads > 0:
        r.threads = config.threads
    fmt = r.image_settings
    fmt.file_format = "PNG"
    fmt.color_mode = "RGBA"
    fmt.color_depth = "8"
    fmt.compression = 0
    scene.display_settings.display_device = "sRGB"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0

    cyc = scene.cycles
    cyc.samples = config.samples
    cyc.use_adaptive_sampling = False
    cyc.use_denoising = config.denoise
    cyc.seed = 0
    cyc.max_bounces = 4
    cyc.diffuse_bounces = 2
    cyc.glossy_bounces = 2
    cyc.transmission_bounces = 0
    cyc.volume_bounces = 0
    cyc.transparent_max_bounces = 4
    cyc.caustics_reflective = cyc.caustics_refractive = False
    cyc.device = _setup_device(bpy, config.device)

    world = bpy.data.worlds.new(_NAME)
    created.append(world)
    _world_nodes(world, config)
    scene.world = world

    cam_data = bpy.data.cameras.new(_NAME)
    created.append(cam_data)
    cam_data.type = "PERSP"
    cam_data.sensor_fit = "HORIZONTAL"
    cam_data.shift_x = cam_data.shift_y = 0.0
    cam_data.clip_start = 0.01
    cam_data.clip_end = 1000.0
    cam = bpy.data.objects.new(_NAME + "_camera", cam_data)
    created.append(cam)
    scene.collection.objects.link(cam)
    scene.camera = cam

    sun_data = bpy.data.lights.new(_NAME, "SUN")
    created.append(sun_data)
    sun_data.energy = SUN_RADIANCE * math.pi
    sun_data.angle = math.radians(2.0)
    sun_data.color = (1.0, 1.0, 1.0)
    sun = bpy.data.objects.new(_NAME + "_sun", sun_data)
    created.append(sun)
    scene.collection.objects.link(sun)
    return scene, cam, sun


def _node_tree(idblock):
    if idblock.node_tree is None:  # before Blender 5 node trees appear only with use_nodes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            idblock.use_nodes = True
    return idblock.node_tree


def _world_nodes(world, config: CyclesConfig) -> None:
    """White ambient light for shading; ``background`` for camera rays (seen when not transparent)."""
    tree = _node_tree(world)
    nodes, links = tree.nodes, tree.links
    nodes.clear()
    light = nodes.new("ShaderNodeBackground")
    light.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
    light.inputs["Strength"].default_value = AMBIENT_STRENGTH
    seen = nodes.new("ShaderNodeBackground")
    lin = srgb_to_linear(np.asarray(config.background, dtype=np.float64))
    seen.inputs["Color"].default_value = (*map(float, lin), 1.0)
    seen.inputs["Strength"].default_value = 1.0
    path = nodes.new("ShaderNodeLightPath")
    mix = nodes.new("ShaderNodeMixShader")
    out = nodes.new("ShaderNodeOutputWorld")
    links.new(path.outputs["Is Camera Ray"], mix.inputs["Fac"])
    links.new(light.outputs["Background"], mix.inputs[1])
    links.new(seen.outputs["Background"], mix.inputs[2])
    links.new(mix.outputs["Shader"], out.inputs["Surface"])


def _build_material(bpy, created: list, emission: bool = False):
    """The vertex-colour material: a Principled BSDF, or with ``emission`` an unlit Emission."""
    mat = bpy.data.materials.new(_NAME + ("_albedo" if emission else ""))
    created.append(mat)
    tree = _node_tree(mat)
    nodes, links = tree.nodes, tree.links
    nodes.clear()
    attr = nodes.new("ShaderNodeVertexColor")  # the "Color Attribute" node
    attr.layer_name = _ATTRIBUTE
    out = nodes.new("ShaderNodeOutputMaterial")
    if emission:
        shader = nodes.new("ShaderNodeEmission")
        shader.inputs["Strength"].default_value = 1.0
        links.new(attr.outputs["Color"], shader.inputs["Color"])
        links.new(shader.outputs["Emission"], out.inputs["Surface"])
    else:
        shader = nodes.new("ShaderNodeBsdfPrincipled")
        shader.inputs["Roughness"].default_value = ROUGHNESS
        links.new(attr.outputs["Color"], shader.inputs["Base Color"])
        links.new(shader.outputs["BSDF"], out.inputs["Surface"])
    return mat


def _build_object(bpy, mesh, material, created: list):
    rgba = np.concatenate([np.clip(mesh.colors, 0.0, 1.0), np.ones((len(mesh.vertices), 1))], 1)
    me = new_mesh(bpy, _NAME, mesh.vertices, mesh.faces, rgba, _ATTRIBUTE, "SRGB")
    created.append(me)
    me.materials.append(material)
    obj = bpy.data.objects.new(_NAME + "_mesh", me)
    created.append(obj)
    return obj


def _setup_device(bpy, device: str) -> str:
    device = device.upper()
    if device == "CPU":
        return "CPU"
    if device != "GPU":
        raise ValueError(f"device must be 'CPU' or 'GPU', got {device!r}")
    prefs = bpy.context.preferences.addons["cycles"].preferences
    for kind in ("OPTIX", "CUDA", "HIP", "METAL", "ONEAPI"):
        try:
            prefs.compute_device_type = kind
        except TypeError:  # not compiled into this build
            continue
        prefs.get_devices()
        found = [d for d in prefs.devices if d.type == kind]
        if found:
            for d in prefs.devices:
                d.use = d.type == kind
            return "GPU"
    raise CyclesUnavailable("device='GPU' asked for, but Cycles found no GPU device")


# --- per view -------------------------------------------------------------------------------------


def _blender_matrix(m: np.ndarray):
    from mathutils import Matrix  # ships with bpy

    return Matrix([[float(x) for x in row] for row in m])


def _sun_matrix(c2w: np.ndarray) -> np.ndarray:
    """World matrix of a sun whose light travels from ``camera back + 0.6 up`` towards the object."""
    right, back = c2w[:3, 0], c2w[:3, 2]
    to_light = back + KEY_LIGHT_UP * np.array([0.0, 0.0, 1.0])
    z = to_light / np.linalg.norm(to_light)  # a sun shines along its local -Z
    x = right - z * float(right @ z)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, c2w[:3, 3]
    return m


def _render(bpy, scene) -> None:
    with _quiet_stdout():
        result = bpy.ops.render.render(write_still=True, scene=scene.name)
    if "FINISHED" not in result:
        raise CyclesUnavailable(f"Cycles render did not finish: {result}")


@contextlib.contextmanager
def _quiet_stdout():
    """Silence Blender's per-render log lines (written by C code straight to file descriptor 1)."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no real descriptor 1 (embedded interpreters)
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _read_png(path: str, res: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    if arr.shape != (res, res, 4):
        raise CyclesUnavailable(f"Cycles wrote a {arr.shape} image, expected ({res}, {res}, 4)")
    os.remove(path)
    return arr.transpose(2, 0, 1)  # (4, R, R), straight alpha


def _remove(bpy, created: list) -> None:
    if not created:
        return
    ids = [x for x in created if x is not None]
    try:
        bpy.data.batch_remove(ids)
    except Exception:  # noqa: BLE001 - fall back to one at a time so cleanup never leaves a leak
        for x in reversed(ids):
            with contextlib.suppress(Exception):
                getattr(bpy.data, _COLLECTIONS[type(x).__name__]).remove(x)
    created.clear()


_COLLECTIONS = {"Scene": "scenes", "World": "worlds", "Camera": "cameras", "Object": "objects",
                "SunLight": "lights", "Light": "lights", "Material": "materials", "Mesh": "meshes"}
