r"""diffusers networks as sdekit models: :func:`from_diffusers`.

**diffusers' convention** (``diffusers`` >= 0.30; ``UNet2DModel`` and the DDPM-family schedulers ``DDPMScheduler``,
``DDIMScheduler``, ``DPMSolverMultistepScheduler``, ...). A network ``unet(sample, timestep).sample`` is trained at
integer timesteps n = 0, ..., N - 1 (``num_train_timesteps``) on

.. math:: x_n = \sqrt{\bar\alpha_n}\,x_0 + \sqrt{1 - \bar\alpha_n}\,\varepsilon, \qquad
          \bar\alpha_n = \prod_{j \le n}(1 - \beta_j),

with the betas of the scheduler's config: ``linear`` (``linspace(beta_start, beta_end, N)``), ``scaled_linear``
(``linspace(sqrt(beta_start), sqrt(beta_end), N) ** 2``), ``squaredcos_cap_v2`` (Nichol & Dhariwal's cosine,
:math:`\beta_n = \min(1 - \bar\alpha(\tfrac{n+1}N)/\bar\alpha(\tfrac nN), 0.999)`,
:math:`\bar\alpha(s) = \cos^2(\tfrac{s + 0.008}{1.008}\tfrac\pi2)`), ``sigmoid`` (GeoDiff's), or ``trained_betas``.
:func:`diffusers_alphas_cumprod` computes the table exactly as diffusers does (float32 betas and cumulative
product), so it equals the scheduler's own ``alphas_cumprod`` bit for bit: the numbers the network was trained
against. ``prediction_type`` says what the network predicts: ``epsilon`` (:math:`\varepsilon`), ``v_prediction``
(:math:`v = \sqrt{\bar\alpha}\,\varepsilon - \sqrt{1-\bar\alpha}\,x_0`, sdekit's ``"v"`` with
:math:`\alpha = \sqrt{\bar\alpha}`, :math:`\sigma = \sqrt{1 - \bar\alpha}`) or ``sample`` (:math:`x_0`).

**sdekit's side.** The SDE is :class:`~sdekit.DiscreteVPSDE` declared from that table: its derived marginal has
:math:`\alpha(t)^2 = \bar\alpha_n` at :math:`t = n + 1` (to float64 round-off) and interpolates in log-SNR between
timesteps. **t <-> timestep: t = n + 1**, T = N, ``default_eps`` = 1 (timestep 0). The adapted model
(:class:`DiffusersModel`) calls ``unet(x, t - 1)``: at a training timestep exactly the integer diffusers passes
(integers are exact in float32 too), between timesteps a fractional timestep (diffusers' sinusoidal embedding is
smooth in it; the network was never trained there, the marginal there is the log-SNR interpolation), below t = 1 a
negative one (stay at ``eps >= 1``). ``prediction_type`` becomes ``model.parameterization`` (``"eps"``, ``"v"``,
``"x0"``): pass ``parameterization=model.parameterization`` to :func:`sdekit.sample`, :func:`sdekit.logp` and
:func:`sdekit.losses.dsm`. Sampling-time settings of the scheduler (``clip_sample``, ``thresholding``, timestep
spacing) are not part of the model and are ignored; sdekit never clips :math:`\hat x_0`.

**Reproducing diffusers' samplers.** :func:`diffusers_schedule` turns a scheduler's ``timesteps`` (after
``set_timesteps``) into sdekit's explicit ``grid=`` and the final step. ``DDIMScheduler`` (eta = 0) is ``exp1`` on
that grid; ``DPMSolverMultistepScheduler`` (``dpmsolver++``, order 2, ``solver_type="midpoint"``) is ``dpm++2m``;
both to float round-off (``tests/adapters/test_diffusers.py``). Their last step: DDIM with ``set_alpha_to_one``
and DPM-Solver with ``final_sigmas_type="zero"`` jump to :math:`\hat x_0`, which is sdekit's denoising step
(``denoise=True``; DPM-Solver's first-order last step then *is* that step, so sdekit's ``lower_order_final`` is
False); otherwise they end at timestep 0 (t = 1) without denoising.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import AdapterError, SDEDeclarationError
from ..symbolic.zoo import DiscreteVPSDE

__all__ = [
    "BETA_SCHEDULES",
    "PREDICTION_TYPES",
    "DiffusersModel",
    "diffusers_alphas_cumprod",
    "diffusers_schedule",
    "diffusers_sde",
    "from_diffusers",
]

PREDICTION_TYPES: dict[str, str] = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
"""diffusers' ``prediction_type`` -> sdekit's parameterization."""

BETA_SCHEDULES: tuple[str, ...] = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
"""The ``beta_schedule`` values :func:`diffusers_alphas_cumprod` computes (or ``trained_betas``)."""

_NOT_VP = ("sigma_min", "sigma_max", "sigma_data")
"""Config keys of diffusers' variance-exploding / EDM schedulers (``KarrasVeScheduler``, ``ScoreSdeVeScheduler``,
``EDMEulerScheduler``, ...), which have no beta table."""


def _read_config(scheduler: Any) -> tuple[dict[str, Any], str]:
    """(config as a dict, the scheduler's class name) of a scheduler object (its ``.config``) or a config mapping."""
    config = getattr(scheduler, "config", scheduler)
    if not isinstance(config, Mapping):
        raise AdapterError(
            f"scheduler must be a diffusers scheduler (with a .config) or its config dict, "
            f"got {type(scheduler).__name__}"
        )
    name = str(config.get("_class_name", type(scheduler).__name__ if config is not scheduler else "the config"))
    return dict(config), name


def _require(config: dict[str, Any], key: str, name: str, accepted: str) -> Any:
    if config.get(key) is None:
        raise AdapterError(f"{name} has no {key!r} in its config; pass a config with {key!r}: {accepted}")
    return config[key]


def _check_vp(config: dict[str, Any], name: str) -> None:
    """A DDPM-family (beta table) scheduler, not a variance-exploding one or a flow-matching one."""
    if config.get("beta_schedule") is None and config.get("trained_betas") is None:
        sigmas = [k for k in _NOT_VP if k in config]
        what = f"a sigma-parameterised scheduler (config keys {', '.join(sigmas)})" if sigmas else "not a VP scheduler"
        raise AdapterError(
            f"{name} is {what}, without a beta table; from_diffusers takes the DDPM-family schedulers (beta_schedule "
            f"one of {', '.join(map(repr, BETA_SCHEDULES))}, or trained_betas); for k-diffusion/EDM networks use "
            f"sdekit.adapters.from_k_diffusion"
        )
    if config.get("rescale_betas_zero_snr"):
        raise AdapterError(
            f"{name} has rescale_betas_zero_snr=True: alpha_bar = 0 at the last timestep has no Gaussian prior and an "
            f"infinite log-SNR; sdekit supports tables with alpha_bar > 0 (pass rescale_betas_zero_snr=False)"
        )
    if config.get("use_flow_sigmas") or config.get("prediction_type") == "flow_prediction":
        raise AdapterError(f"{name} is a flow-matching configuration (flow sigmas), not a DDPM beta table")


def _cosine_betas(n: int, max_beta: float = 0.999) -> list[float]:
    """diffusers' ``betas_for_alpha_bar(n)`` (cosine), in Python floats like diffusers."""

    def alpha_bar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    return [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)]


def _betas(config: dict[str, Any], name: str) -> torch.Tensor:
    """The float32 betas exactly as diffusers' schedulers compute them."""
    if config.get("trained_betas") is not None:
        return torch.tensor(config["trained_betas"], dtype=torch.float32)
    accepted = ", ".join(map(repr, BETA_SCHEDULES))
    schedule = _require(config, "beta_schedule", name, accepted)
    n = _require(config, "num_train_timesteps", name, "the number of training timesteps (e.g. 1000)")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise AdapterError(f"{name}: num_train_timesteps must be an integer >= 2, got {n!r}")
    if schedule == "squaredcos_cap_v2":
        return torch.tensor(_cosine_betas(n), dtype=torch.float32)
    if schedule not in BETA_SCHEDULES:
        raise AdapterError(f"{name}: unknown beta_schedule {schedule!r}; accepted: {accepted} (or trained_betas)")
    lo = _require(config, "beta_start", name, "the first beta, e.g. 0.0001")
    hi = _require(config, "beta_end", name, "the last beta, e.g. 0.02")
    if schedule == "linear":
        return torch.linspace(lo, hi, n, dtype=torch.float32)
    if schedule == "scaled_linear":
        return torch.linspace(lo**0.5, hi**0.5, n, dtype=torch.float32) ** 2
    return torch.sigmoid(torch.linspace(-6, 6, n, dtype=torch.float32)) * (hi - lo) + lo  # "sigmoid" (GeoDiff)


def diffusers_alphas_cumprod(scheduler: Any) -> torch.Tensor:
    r"""The table :math:`\bar\alpha_n = \prod_{j\le n}(1 - \beta_j)` of a diffusers scheduler (object or config dict),
    computed as diffusers computes ``alphas_cumprod`` (float32 betas and product), returned as float64.

    Raises:
        AdapterError: not a DDPM-family scheduler, an unknown ``beta_schedule``, a missing key (named, with what it
            accepts), ``rescale_betas_zero_snr=True``.
    """
    config, name = _read_config(scheduler)
    _check_vp(config, name)
    betas = _betas(config, name)
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float64)


def diffusers_sde(scheduler: Any) -> DiscreteVPSDE:
    r""":class:`~sdekit.DiscreteVPSDE` of a diffusers scheduler's table (:func:`diffusers_alphas_cumprod`): its marginal
    has :math:`\alpha(n + 1)^2 = \bar\alpha_n` exactly."""
    config, name = _read_config(scheduler)
    table = diffusers_alphas_cumprod(config)
    try:
        return DiscreteVPSDE.from_alphas_cumprod(table)
    except SDEDeclarationError as err:
        raise AdapterError(f"{name}: its alpha-bar table does not declare an SDE: {err}") from err


def _parameterization(config: dict[str, Any], name: str) -> str:
    accepted = ", ".join(f"{k!r} ({v})" for k, v in PREDICTION_TYPES.items())
    kind = _require(config, "prediction_type", name, accepted)
    if kind not in PREDICTION_TYPES:
        raise AdapterError(f"{name}: unsupported prediction_type {kind!r}; accepted: {accepted}")
    return PREDICTION_TYPES[kind]


class DiffusersModel(torch.nn.Module):
    r"""A diffusers network as an sdekit model: ``model(x, t) = unet(x, t - 1).sample`` (module docstring).

    A ``torch.nn.Module`` holding the network as ``network`` (``.parameters()``, ``.eval()`` and :func:`sdekit.logp`'s
    ``adjoint`` reach it). It predicts :attr:`parameterization`; with ``variance_type`` ``learned`` or
    ``learned_range`` the network outputs twice the channels and the first half is the prediction.
    """

    def __init__(self, network: Any, parameterization: str, *, learned_variance: bool = False):
        super().__init__()
        self.network = network
        self.parameterization = parameterization
        self.learned_variance = learned_variance

    @staticmethod
    def timestep(t: Any, x: torch.Tensor) -> torch.Tensor:
        """diffusers' timestep ``t - 1`` of sdekit time t, one per row of ``x`` (t's dtype; x's device)."""
        tt = t.to(x.device) if isinstance(t, torch.Tensor) else torch.tensor(float(t), dtype=x.dtype, device=x.device)
        if not tt.is_floating_point():
            tt = tt.to(x.dtype)
        tt = tt.reshape(-1)
        return DiscreteVPSDE.to_timestep(tt.expand(x.shape[0]) if tt.numel() == 1 else tt)

    def forward(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """The network's prediction at sdekit time t (a number or shape (batch,))."""
        out = self.network(x, self.timestep(t, x))
        out = out.sample if hasattr(out, "sample") else (out[0] if isinstance(out, tuple) else out)
        if self.learned_variance and out.ndim > 1 and out.shape[1] == 2 * x.shape[1]:
            out = out[:, : x.shape[1]]
        return out


def from_diffusers(unet: Any, scheduler: Any) -> tuple[DiffusersModel, DiscreteVPSDE]:
    r"""A diffusers network and its scheduler as ``(model, sde)`` for sdekit.

    Args:
        unet: ``UNet2DModel`` or any callable ``unet(sample, timestep)`` returning an object with ``.sample`` (or a
            tensor, or a tuple whose first entry is the prediction). Call ``unet.eval()`` first; for float64
            sampling convert it (``unet.double()``).
        scheduler: the scheduler it was trained with, or its config dict (``scheduler.config``): ``beta_schedule``
            (or ``trained_betas``), ``beta_start``/``beta_end``, ``num_train_timesteps``, ``prediction_type``.

    Returns:
        ``(model, sde)``: :class:`DiffusersModel` (``model(x, t)``, t = timestep + 1, predicting
        ``model.parameterization``) and the :class:`~sdekit.DiscreteVPSDE` of the training table.

    Raises:
        AdapterError: a network that is not callable, a scheduler that is not DDPM-family (VE/EDM/flow), an unknown
            ``beta_schedule`` or ``prediction_type``, a missing config key (the message names it and the accepted
            values).

    Example::

        model, sde = sdekit.adapters.from_diffusers(unet.eval(), scheduler)
        x = sdekit.sample(model, sde, (16, 3, 32, 32), solver="dpm++2m", steps=20,
                          parameterization=model.parameterization)
    """
    if not callable(unet):
        raise AdapterError(f"unet must be callable as unet(sample, timestep), got {type(unet).__name__}")
    config, name = _read_config(scheduler)
    _check_vp(config, name)
    parameterization = _parameterization(config, name)
    sde = diffusers_sde(config)
    learned = config.get("variance_type") in ("learned", "learned_range")
    return DiffusersModel(unet, parameterization, learned_variance=learned), sde


def diffusers_schedule(scheduler: Any) -> dict[str, Any]:
    r"""Keywords of :func:`sdekit.sample` that run on a diffusers scheduler's own points (after ``set_timesteps``):
    ``grid`` (its timesteps + 1, then t = 1 when it ends at timestep 0 without jumping to :math:`\hat x_0`) and
    ``denoise`` (True when its last step jumps to :math:`\hat x_0`); for multistep DPM-Solver also
    ``lower_order_final`` (module docstring).

    ``DDIMScheduler`` with eta = 0 is then ``solver="exp1"``, ``DPMSolverMultistepScheduler`` (``dpmsolver++``, order 2)
    ``solver="dpm++2m"``. Raises :class:`~sdekit.errors.AdapterError` when the scheduler's points are not the table's
    (Karras/exponential sigmas), or its steps do not follow its own timesteps (DDIM with ``timestep_spacing=
    "linspace"`` when N is not a multiple of the steps).
    """
    config, name = _read_config(scheduler)
    ts = getattr(scheduler, "timesteps", None)
    if getattr(scheduler, "num_inference_steps", None) is None or ts is None:
        raise AdapterError(f"{name}: call scheduler.set_timesteps(n) first")
    steps = [int(v) for v in torch.as_tensor(ts).tolist()]
    n_train = int(config["num_train_timesteps"])
    if hasattr(scheduler, "final_alpha_cumprod"):  # DDIM's rule: prev = timestep - N // n
        prev = [s - n_train // int(scheduler.num_inference_steps) for s in steps]
        if prev[:-1] != steps[1:]:
            raise AdapterError(f"{name}: DDIM steps to {prev[:-1]}, not to its own timesteps {steps[1:]}")
        if prev[-1] >= 0 or not config.get("set_alpha_to_one", True):
            end = max(prev[-1], 0)
            return {"grid": _times(steps + ([end] if end != steps[-1] else [])), "denoise": False}
        return {"grid": _times(steps), "denoise": True}
    return _multistep_schedule(scheduler, config, name, steps)


def _times(steps: list[int]) -> torch.Tensor:
    return DiscreteVPSDE.from_timestep(torch.tensor(steps, dtype=torch.float64))


def _multistep_schedule(scheduler: Any, config: dict[str, Any], name: str, steps: list[int]) -> dict[str, Any]:
    r""":func:`diffusers_schedule` of a multistep scheduler with ``sigmas`` (DPM-Solver): its sigmas must be the
    table's :math:`\sqrt{(1 - \bar\alpha)/\bar\alpha}` at its timesteps (float32 round-off), then 0 or timestep
    0's."""
    ab = diffusers_alphas_cumprod(config)
    table = torch.sqrt((1 - ab) / ab)
    sigmas = torch.as_tensor(scheduler.sigmas, dtype=torch.float64)
    if sigmas.numel() != len(steps) + 1 or not torch.allclose(sigmas[:-1], table[steps], rtol=1e-5, atol=0):
        raise AdapterError(f"{name}: its sigmas are not the training table's at its timesteps (Karras/Lu sigmas?)")
    few = len(steps) < 15 and bool(config.get("lower_order_final", True))
    if float(sigmas[-1]) == 0.0:
        if int(config.get("solver_order", 2)) > 2 and few:
            raise AdapterError(f"{name}: order 3 with lower_order_final and a zero final sigma has no sdekit match")
        return {"grid": _times(steps), "denoise": True, "lower_order_final": False}
    if not math.isclose(float(sigmas[-1]), float(table[0]), rel_tol=1e-5):
        raise AdapterError(f"{name}: its final sigma {float(sigmas[-1]):g} is neither 0 nor timestep 0's")
    end = [] if steps[-1] == 0 else [0]
    return {"grid": _times(steps + end), "denoise": False, "lower_order_final": few}
