"""Configuration of an alignment run: one dataclass, validated once, saved with every checkpoint."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..render.cameras import OrbitConfig
from ..render.volume import VolumeRenderConfig
from ..sampling.sampler import SamplerConfig

from ..names import METHODS
REWARD_WEIGHTINGS = ("sqrt", "squared", "none")


def _check_cameras_and_images(sampler, orbit, render) -> None:
    """The nested settings a worker job or ``--views``/``--resolution`` can set, checked here rather
    than at the first render: a bad one there fails mid-run, after ``run.json`` is written.
    Raises :class:`engine.params.BadInput` naming the field (e.g. ``orbit.views``)."""
    from ..params import BadInput, check_float, check_int

    for name, value, kind in (("sampler", sampler, SamplerConfig), ("orbit", orbit, OrbitConfig),
                              ("render", render, VolumeRenderConfig)):
        if not isinstance(value, kind):
            raise BadInput(f"{name} must be an object of {kind.__name__} fields, got {value!r}")
    check_int("orbit.views", orbit.views, 1, 64)
    check_float("orbit.fov", orbit.fov, 1e-3, 179.0)
    check_float("orbit.radius", orbit.radius, 1.75, 1e3)  # outside the [-1, 1]^3 scene cube (sqrt(3) = 1.732)
    for name in ("elevation", "azimuth_offset"):
        check_float(f"orbit.{name}", getattr(orbit, name), -360.0, 360.0)
    check_float("orbit.elevation_jitter", orbit.elevation_jitter, 0.0, 90.0)
    check_int("render.resolution", render.resolution, 1, 4096)
    check_int("render.samples", render.samples, 1, 4096)
    check_int("render.chunk_rays", render.chunk_rays, 1)
    check_float("render.sharpness", render.sharpness, 1e-6, 1.0)
    check_float("render.ambient", render.ambient, 0.0, 1.0)
    if len(render.background) != 3:
        raise BadInput(f"render.background must be 3 numbers in [0, 1], got {render.background!r}")
    for value in render.background:
        check_float("render.background[]", value, 0.0, 1.0)


@dataclass(frozen=True)
class AlignConfig:
    """Everything that decides the result of a run (given model, reward and prompts).

    Nabla-R2D3 terms follow docs/method.md: ``beta`` scales the reward gradient, ``trust_region`` is
    lambda, ``reward_weighting`` picks w = sqrt(alpha_bar) / alpha_bar / 1 at intermediate states,
    ``subsample`` is the fraction of transitions per trajectory used per update (the final one is
    always included), ``low_variance`` stratifies the rest across quarters of the chain.
    """

    method: str = "nabla"
    steps: int = 100  # sampling rounds ("epochs"): sample trajectories, then update on them
    trajectories: int = 4  # sampled per round and process
    micro_batch: int = 1  # trajectories per forward/backward (memory bound)
    accumulate: int = 1  # micro-batches per optimizer update; a round makes trajectories / (micro_batch * accumulate) updates
    # Passes over a round's trajectories: each pass makes those updates again, with transitions drawn
    # anew, so the policy is fitted to the same targets several times before new samples are drawn
    # (docs/method.md, "Several passes per round").
    epochs: int = 1
    # First-order SDE-DPM-Solver++ (DiffSplat's sampler in the paper): the same Gaussian transitions as
    # DDIM with eta 1 except the last, which is deterministic and so not trained on. DDIM's last step
    # (std 0.0064 on the embedded model) would otherwise outweigh every other transition in score
    # units by ~1e4 and pin the LoRA near the base (docs/alignment.md, "Which transitions weigh most").
    sampler: SamplerConfig = SamplerConfig(scheduler="dpmsolver-sde")

    # Nabla-R2D3
    beta: float = 1e3
    trust_region: float = 30.0  # lambda, in denoiser-output units; the score-unit fit weighs 1/std^4 (docs/alignment.md)
    reward_weighting: str = "sqrt"
    reward_gradient_from: str = "policy"  # policy: x0_hat of the current LoRA model (docs/method.md); base: frozen model
    # score (docs/method.md) | std | mean: per-transition weight of the forward term's squared residual
    # (docs/alignment.md, "Which transitions weigh most"). None: score units, or std units with the
    # bootstrap flow network, where they bring the policy closer to the tilt (docs/method.md, "The flow
    # variant's units").
    residual_units: str | None = None
    subsample: float = 0.4
    low_variance: bool = True
    clip_reward_grad: float | None = None  # max norm of beta * w * g per sample; None = off
    flow_network: bool = False  # full Nabla-GFlowNet: learned residual flow with reverse + terminal terms
    flow_lr: float = 1e-3
    # Where the reverse term reads x_{t-1}: "sampled" (the recorded end point, as the paper's code) or
    # "mean" (the recorded transition mean, i.e. the expectation of the residual over the step's
    # noise). The sampled end point adds a penalty ||J_theta - J_base||^2 / std^2 on the change of
    # the mean's Jacobian, which a tilt that reweights modes needs (docs/method.md, "Flow network").
    reverse_point: str = "sampled"
    # With flow_target="reverse": whether the forward term trains the flow network too (the plain sum
    # of the residuals) or only the policy, the flow being fitted by the reverse and terminal terms
    # alone (docs/method.md, "Flow network"). The bootstrap fit never lets the forward term train it.
    flow_forward_grad: bool = True
    # How the flow network is fitted (docs/method.md, "Flow network"). "bootstrap" (default): to the
    # base's own flow recursion, grad log F(x_t) = J_base(x_t)^T E[grad log F(x_{t-1})], whose right
    # side is the forward target at the recorded end point (detached, as in TD learning); the policy is
    # trained by the forward term alone. Its fixed point is the base's flow, whatever the policy does.
    # "reverse": the reverse nabla-DB term at x_t plus the terminal term (the paper's; double
    # backward), which fits the flow to the policy's current shift and settles short of the tilt.
    flow_target: str = "bootstrap"
    # With flow_target="reverse": whether the reverse term also trains the policy (double backward);
    # the official code's reverse term trains the flow only.
    reverse_policy_grad: bool = True
    # Units of the bootstrap fit of the flow network (flow_target="bootstrap"), apart from the
    # policy's: score units keep the late states' flow fitted as strongly as the early ones'.
    flow_fit_units: str = "score"

    # baselines
    refl_late: float = 0.75  # ReFL: random step index in [refl_late * K, K)
    ddpo_clip: float = 1e-4  # PPO clip range on the probability ratio
    ddpo_adv_clip: float = 5.0

    # optimisation
    lr: float = 5e-3  # the paper's 1e-4..5e-4 is for 0.6B-parameter denoisers and 100 rounds
    weight_decay: float = 1e-4
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    lora_rank: int = 8
    lora_alpha: float | None = None  # None: = rank
    lora_targets: tuple[str, ...] | None = None  # None: the model's lora_target_modules
    # Also adapt the model's conditioning layers (timestep embedder, AdaLN; its lora_conditioning_modules),
    # as the official code does.
    lora_conditioning: bool = False

    # reward evaluation
    orbit: OrbitConfig = OrbitConfig(views=4, random_azimuth=True, elevation_jitter=5.0)
    render: VolumeRenderConfig = VolumeRenderConfig(resolution=32, samples=32)
    image_noise: float = 2e-3  # std of Gaussian noise added to renders before the reward
    # Nabla-R2D3: views rendered for the reward gradient at intermediate states (before the terminal
    # one, where w < 1), drawn at random from the round's cameras; None = all of them. Rendering
    # is most of a round's cost (docs/method.md, "Speed").
    intermediate_views: int | None = None
    # ... and the detail (fraction of image resolution, ray samples and decode resolution) there;
    # 0.5 decodes and renders about 1/8 and 1/4 of the points.
    intermediate_detail: float = 1.0
    # Fresh cameras for every transition's reward gradient (the official code), instead of the round's.
    cameras_per_transition: bool = False
    # Where the reward's gradient in the clean latent is taken for states before the terminal one:
    # "own" (the paper): at each state's own one-step prediction x0_hat(x_{t-1}), one decode, render and
    # reward backward per state; "terminal": at the trajectory's terminal prediction (its sample), pulled
    # back through each state's x0_hat Jacobian, g = J_x0_hat(x_{t-1})^T grad R(x0_hat(x_terminal)): one
    # decode and render per trajectory instead of one per chosen transition (an approximation; exact
    # at the terminal state and for a reward linear in the latent; docs/method.md, "Round cost").
    intermediate_gradient: str = "own"
    # Train each round on the previous round's samples (the official code): the trust region toward the
    # outputs recorded at sampling time then acts from the first update. Sampled trajectories per round
    # are unchanged; the first round trains on its own.
    train_on_previous: bool = False
    # Diagnostic (docs/method.md, "Fit against target noise"): also log the fit against a low-noise
    # estimate of the forward target, averaged over this many redraws of end state and cameras, no image
    # noise (engine/align/fit_diagnostics.py); 0 = off. Each redraw costs one more reward gradient.
    fit_clean_redraws: int = 0

    seed: int = 0
    checkpoint_every: int = 10
    mixed_precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU; "fp32" forces fp32

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.reward_weighting not in REWARD_WEIGHTINGS:
            raise ValueError(f"reward_weighting must be one of {', '.join(REWARD_WEIGHTINGS)}")
        if self.reward_gradient_from not in ("policy", "base"):
            raise ValueError("reward_gradient_from must be policy or base")
        if self.reverse_point not in ("sampled", "mean"):
            raise ValueError("reverse_point must be sampled or mean")
        if self.flow_target not in ("bootstrap", "reverse"):
            raise ValueError("flow_target must be bootstrap or reverse")
        if self.intermediate_gradient not in ("own", "terminal"):
            raise ValueError("intermediate_gradient must be own or terminal")
        if self.residual_units is None:  # frozen: resolved once, so to_dict and run identities hold the units used
            bootstrap = self.flow_network and self.flow_target == "bootstrap"
            object.__setattr__(self, "residual_units", "std" if bootstrap else "score")
        for name in ("residual_units", "flow_fit_units"):
            if getattr(self, name) not in ("score", "std", "mean"):
                raise ValueError(f"{name} must be score, std or mean")
        if not isinstance(self.epochs, int) or isinstance(self.epochs, bool) or not 1 <= self.epochs <= 100:
            raise ValueError(f"epochs must be an integer in 1..100, got {self.epochs!r}")
        if self.steps < 0 or self.trajectories < 1 or self.micro_batch < 1 or self.accumulate < 1 or self.checkpoint_every < 1:
            raise ValueError("steps must be >= 0; trajectories, micro_batch, accumulate and checkpoint_every >= 1")
        if not 0.0 < self.subsample <= 1.0:
            raise ValueError("subsample must be in (0, 1]")
        if not 0.0 <= self.refl_late < 1.0:
            raise ValueError("refl_late must be in [0, 1)")
        for name in ("beta", "trust_region", "lr", "grad_clip", "image_noise"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0")
        if self.intermediate_views is not None and self.intermediate_views < 1:
            raise ValueError("intermediate_views must be >= 1 or None")
        if not (math.isfinite(self.intermediate_detail) and 0.0 < self.intermediate_detail <= 1.0):
            raise ValueError("intermediate_detail must be in (0, 1]")
        if not isinstance(self.fit_clean_redraws, int) or isinstance(self.fit_clean_redraws, bool) or self.fit_clean_redraws < 0:
            raise ValueError("fit_clean_redraws must be an integer >= 0")
        if self.lora_rank < 1:
            raise ValueError("lora_rank must be >= 1")
        _check_cameras_and_images(self.sampler, self.orbit, self.render)
        if self.mixed_precision not in ("auto", "fp32"):
            raise ValueError("mixed_precision must be 'auto' or 'fp32'")
        if self.flow_network and self.method != "nabla":
            raise ValueError("the flow network belongs to the nabla method")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "AlignConfig":
        raw = dict(raw)
        nested = {"sampler": SamplerConfig, "orbit": OrbitConfig, "render": VolumeRenderConfig}
        for key, kind in nested.items():
            if isinstance(raw.get(key), dict):
                value = dict(raw[key])
                if key == "render" and "background" in value:
                    value["background"] = tuple(value["background"])
                raw[key] = kind(**value)
        for key in ("adam_betas", "lora_targets"):
            if raw.get(key) is not None:
                raw[key] = tuple(raw[key])
        return cls(**raw)


# The official training code's regime (nabla-R2D3/nabla-R2D3, as read for docs/method.md,
# "Departures from the official code"): w = alpha_bar, a stochastic (sigma_min) last step that is
# trained, the previous round's samples (so the trust region acts from the first update), cameras
# drawn per transition, LoRA also on the timestep embedder and AdaLN, and 16 trajectories x 8
# transitions per optimizer step. Its DNC detaches the depth: the reward option
# ``dnc.detach_depth=true``. Its learning rate (1e-4..5e-4) and lambda (3e3..1e4) are for its
# 0.6B-parameter denoiser, so they are not part of the preset. The toys measure each of these
# choices (docs/method.md); the defaults above are chosen from those measurements.
PRESETS: dict[str, dict] = {
    "official": dict(
        reward_weighting="squared",
        sampler=SamplerConfig(scheduler="dpmsolver-sde", final_sigmas="sigma_min"),
        train_on_previous=True,
        cameras_per_transition=True,
        lora_conditioning=True,
        trajectories=16,
        micro_batch=4,
        accumulate=4,
    ),
}


def preset(name: str, **overrides) -> AlignConfig:
    """An :class:`AlignConfig` from a named preset of :data:`PRESETS`, with ``overrides`` on top."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return AlignConfig(**{**PRESETS[name], **overrides})
