r"""diffusers' DPM-Solver++ and UniPC on sdekit's affine SDEs: the VP view, the peers and their driver.

Used by :mod:`benchmarks.few_step` (its module docstring documents the mapping): an affine SDE with marginal
:math:`x_t = \alpha x_0 + m + \sigma\varepsilon` is seen by diffusers' VP schedulers in the variables
:math:`x^{VP} = (x - m)/s`, :math:`s = \sqrt{\alpha^2 + \sigma^2}`, with ``sigmas`` :math:`r = \sigma/\alpha`
and the noise prediction :math:`\hat\varepsilon = -\sigma\,\text{score}`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

import sdekit

TIMESTEPS = 1000  # diffusers' time map: timestep = 1000 t / T
PEER_DEFAULT_GRID = "uniform"  # diffusers' timestep_spacing="linspace" (integer timesteps uniform in t)
PEER_GRIDS: tuple[str, ...] = ("uniform", "logsnr", "edm")
"""The grids diffusers itself offers: ``timestep_spacing="linspace"`` (its default, uniform in t),
``use_lu_lambdas=True`` (uniform in log-SNR) and ``use_karras_sigmas=True`` (EDM's rho = 7 on r)."""
DOUBLED_D2 = "DPM-Solver++(3M) D2x2 (diagnostic)"
PUBLISHED_ORDER = {
    "DPM-Solver++(2M)": 2,
    "DPM-Solver++(3M)": 3,
    DOUBLED_D2: 3,
    "UniPC-2 bh1": 3,
    "UniPC-2 bh2": 3,
    "UniPC-3 bh1": 4,
    "UniPC-3 bh2": 4,
}
"""Orders the peers' papers state for their multistep methods (UniPC-p with its corrector UniC: p + 1)."""

# --------------------------------------------------------------------------------------------- the VP view


@dataclass
class VPView:
    r"""The SDE's marginal at times t in diffusers' VP variables (float64): :math:`x^{VP} = (x - m)/s`."""

    alpha: torch.Tensor  # alpha(t)
    sigma: torch.Tensor  # sigma(t)
    offset: torch.Tensor  # m(t)
    scale: torch.Tensor  # s(t) = sqrt(alpha^2 + sigma^2)
    alpha_vp: torch.Tensor  # alpha / s = 1 / sqrt(1 + r^2)
    sigma_vp: torch.Tensor  # sigma / s = r / sqrt(1 + r^2)
    r: torch.Tensor  # sigma / alpha: diffusers' `sigmas`

    def to_vp(self, x: torch.Tensor, i: int | slice = 0) -> torch.Tensor:
        """x (SDE variables) at time index i -> x^VP."""
        return (x - self.offset[i].to(x.dtype)) / self.scale[i].to(x.dtype)

    def from_vp(self, x_vp: torch.Tensor, i: int | slice = -1) -> torch.Tensor:
        """x^VP at time index i -> x (SDE variables)."""
        return x_vp * self.scale[i].to(x_vp.dtype) + self.offset[i].to(x_vp.dtype)


def vp_view(sde: sdekit.SDE, t: Any) -> VPView:
    r""":class:`VPView` of an affine SDE at times ``t`` (float64): :math:`s = \sqrt{\alpha^2+\sigma^2}`,
    :math:`\alpha^{VP} = \alpha/s`, :math:`\sigma^{VP} = \sigma/s`, :math:`r = \sigma/\alpha`."""
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    marginal = sde.marginal
    alpha, sigma, offset = marginal.alpha(t), marginal.sigma(t), marginal.offset(t)
    scale = torch.sqrt(alpha**2 + sigma**2)
    return VPView(alpha, sigma, offset, scale, alpha / scale, sigma / scale, sigma / alpha)


def vp_betas(sde: sdekit.SDE, n: int = TIMESTEPS) -> torch.Tensor:
    r"""The SDE's n-step DDPM beta table in the VP view: ``alphas_cumprod[k]`` :math:`= (\alpha^{VP})^2` at
    :math:`t_{k+1} = T(k+1)/n`, i.e. :math:`\beta_k = 1 - \bar\alpha_k/\bar\alpha_{k-1}` (:math:`\bar\alpha_{-1}`
    at t = 0). For ``VPSDE`` this is ``sde.discretize(n).betas``."""
    times = torch.linspace(0.0, float(sde.T), n + 1, dtype=torch.float64)
    view = vp_view(sde, times)
    acp = view.alpha_vp**2
    acp[0] = 1.0 if float(view.sigma[0]) == 0.0 else acp[0]
    return 1.0 - acp[1:] / acp[:-1]


class CountingModel:
    """Wraps a model ``model(x, t)`` and counts its calls (one call = one NFE for the whole batch)."""

    def __init__(self, model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.model = model
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x, t)


class EpsModel:
    r"""The peers' noise-prediction model in the VP view: :math:`\hat\varepsilon(x^{VP}, \tau) =
    -\sigma(t)\,\text{score}(s(t)x^{VP} + m(t), t)`, :math:`t = T\tau/1000`. ``score`` is called once per call."""

    def __init__(self, score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], sde: sdekit.SDE) -> None:
        self.score = score
        self.sde = sde

    def __call__(self, x_vp: torch.Tensor, timestep: Any) -> torch.Tensor:
        t = torch.as_tensor(timestep, dtype=torch.float64).reshape(()) * float(self.sde.T) / TIMESTEPS
        view = vp_view(self.sde, t)
        x = view.from_vp(x_vp, 0)
        return -view.sigma[0].to(x_vp.dtype) * self.score(x, t.to(x_vp.dtype).expand(x_vp.shape[0]))


# ------------------------------------------------------------------------------------------------ methods


@dataclass(frozen=True)
class Peer:
    """A diffusers scheduler configuration (``doubled_d2``: the diagnostic variant of :func:`_fixed_3m_class`)."""

    label: str
    cls: str
    kwargs: tuple[tuple[str, Any], ...]
    doubled_d2: bool = False


PEERS: tuple[Peer, ...] = (
    Peer("DPM-Solver++(2M)", "DPMSolverMultistepScheduler", (("algorithm_type", "dpmsolver++"), ("solver_order", 2))),
    Peer("DPM-Solver++(3M)", "DPMSolverMultistepScheduler", (("algorithm_type", "dpmsolver++"), ("solver_order", 3))),
    Peer(
        "DPM-Solver++(3M) D2x2 (diagnostic)",
        "DPMSolverMultistepScheduler",
        (("algorithm_type", "dpmsolver++"), ("solver_order", 3)),
        doubled_d2=True,
    ),
    Peer("UniPC-2 bh1", "UniPCMultistepScheduler", (("solver_order", 2), ("solver_type", "bh1"))),
    Peer("UniPC-2 bh2", "UniPCMultistepScheduler", (("solver_order", 2), ("solver_type", "bh2"))),
    Peer("UniPC-3 bh1", "UniPCMultistepScheduler", (("solver_order", 3), ("solver_type", "bh1"))),
    Peer("UniPC-3 bh2", "UniPCMultistepScheduler", (("solver_order", 3), ("solver_type", "bh2"))),
)
"""The peers: DPM-Solver++ multistep of order 2 and 3, UniPC (with its corrector UniC) of order 2 and 3, bh1/bh2;
and, as a diagnostic, DPM-Solver++(3M) with the exact weight of its second divided difference (twice diffusers')."""


def diffusers_or_none() -> Any:
    """The ``diffusers`` module, or None when it is not installed (``pip install 'sdekit[bench]'``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import diffusers  # lazy: optional benchmark dependency (the 'bench' extra)
    except ImportError:
        return None
    return diffusers


def _fixed_3m_class(diffusers: Any) -> type:
    """Diagnostic for the order table only: DPM-Solver++(3M) with the weight of its second divided difference
    ``D2`` doubled, i.e. the exact integral of the interpolating quadratic (see :func:`measure_orders`)."""
    base = diffusers.DPMSolverMultistepScheduler

    class DoubledD2(base):  # type: ignore[misc, valid-type]
        def multistep_dpm_solver_third_order_update(self, model_output_list, *args, sample=None, **kwargs):
            i = self.step_index
            al = [self._sigma_to_alpha_sigma_t(self.sigmas[j]) for j in (i + 1, i, i - 1, i - 2)]
            lam = [torch.log(a) - torch.log(s) for a, s in al]
            m0, m1, m2 = model_output_list[-1], model_output_list[-2], model_output_list[-3]
            h, h0, h1 = lam[0] - lam[1], lam[1] - lam[2], lam[2] - lam[3]
            r0, r1 = h0 / h, h1 / h
            d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
            d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            (alpha_t, sigma_t), (_, sigma_s0) = al[0], al[1]
            phi1 = torch.expm1(-h)
            return (
                (sigma_t / sigma_s0) * sample
                - alpha_t * phi1 * m0
                + alpha_t * (phi1 / h + 1.0) * d1
                - 2.0 * alpha_t * ((phi1 + h) / h**2 - 0.5) * d2
            )

    return DoubledD2


def make_scheduler(peer: Peer, sde: sdekit.SDE, diffusers: Any, **overrides: Any) -> Any:
    """A diffusers scheduler for ``peer`` on ``sde``'s VP-view beta table (:func:`vp_betas`), ending at the last
    grid sigma (``final_sigmas_type="sigma_min"``)."""
    cls = _fixed_3m_class(diffusers) if peer.doubled_d2 else getattr(diffusers, peer.cls)
    kwargs = dict(peer.kwargs)
    kwargs.update(
        num_train_timesteps=TIMESTEPS,
        trained_betas=vp_betas(sde, TIMESTEPS).tolist(),
        prediction_type="epsilon",
        final_sigmas_type="sigma_min",
    )
    kwargs.update(overrides)
    return cls(**kwargs)


def run_peer(scheduler: Any, sde: sdekit.SDE, model: Callable, x_T: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """Integrate from ``x_T`` at ``times[0]`` to ``times[-1]`` with a diffusers multistep scheduler on the exact
    grid ``times`` (decreasing, float64): one ``model`` call per step (see the module docstring's mapping)."""
    n = times.shape[0] - 1
    view = vp_view(sde, times)
    with warnings.catch_warnings():  # diffusers' own np.array(torch tensor) under numpy 2: DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        scheduler.set_timesteps(n)  # resets the multistep history and counters
    scheduler.sigmas = view.r.clone()
    scheduler.timesteps = times[:-1] * (TIMESTEPS / float(sde.T))
    scheduler.set_begin_index(0)
    eps_model = EpsModel(model, sde)
    x = view.to_vp(x_T, 0)
    for timestep in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, timestep)
        x = scheduler.step(eps_model(x_in, timestep), timestep, x).prev_sample
    return view.from_vp(x, -1)
