r"""score_sde_pytorch networks as sdekit models: :func:`from_score_sde`.

**score_sde's convention** (Song et al. 2021, ``yang-song/score_sde_pytorch``, ``models/utils.py``
``get_score_fn``): the network is called ``model(x, labels)`` and its output becomes the score as follows (t is
score_sde's time in [0, 1], ``std`` its ``sde.marginal_prob(x, t)[1]``):

* ``vpsde``, ``continuous=True``, and ``subvpsde`` (always): ``labels = 999 t``, ``score = -model(x, labels) / std``
  (the network predicts :math:`\varepsilon = -\sigma s`), with
  :math:`\mathrm{std} = \sqrt{1 - e^{2\ell(t)}}` (VP) or :math:`1 - e^{2\ell(t)}` (sub-VP),
  :math:`\ell(t) = -\tfrac14 t^2(\beta_{\max} - \beta_{\min}) - \tfrac12 t\beta_{\min}`;
* ``vpsde``, ``continuous=False`` (DDPM checkpoints): ``labels = t (N - 1)`` (float), ``std`` the DDPM table
  :math:`\sqrt{1 - \bar\alpha_i}` at ``i = int(labels)``, :math:`\bar\alpha_i = \prod_{j \le i}(1 - \beta_j)`,
  :math:`\beta_j` = ``linspace(beta_min / N, beta_max / N, N)`` (computed here in float64);
* ``vesde``, ``continuous=True``: ``labels = std`` :math:`= \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^t`, the noise
  level itself, and the output *is* the score (NCSN++ divides by sigma inside when ``scale_by_sigma``);
* ``vesde``, ``continuous=False`` (NCSN checkpoints): ``labels = round((1 - t)(N - 1))``, the index of the level in the
  geometric table :math:`\sigma_i = \sigma_{\max}(\sigma_{\min}/\sigma_{\max})^{i/(N-1)}` (largest first); the
  output is the score.

**sdekit's side.** ``vpsde`` and ``subvpsde`` become :class:`~sdekit.VPSDE` / :class:`~sdekit.SubVPSDE` with the same
``beta_min``, ``beta_max``: the same SDE, so sdekit's t is score_sde's t, and ``std`` is sdekit's derived
``sde.marginal.sigma(t)`` (the formulas above are its closed forms, evaluated here in float64). ``vesde`` becomes
:class:`~sdekit.VESDE` spanning :math:`[\sigma_{\min}, \sigma_{\max}]` on ``[default_eps, T]``
(:func:`~sdekit.adapters._noise_levels.sde_spanning`). score_sde perturbs data with
:math:`\sigma_{\min}(\sigma_{\max}/\sigma_{\min})^t`, which does not vanish at t = 0 (no SDE started from the data has
that marginal); sdekit's VESDE has the exact
:math:`\sigma(t) = \sigma_{\min}\sqrt{(\sigma_{\max}/\sigma_{\min})^{2t}-1}`, and the network is asked at the noise
level the state really has: at sdekit time t, score_sde's labels for
:math:`t' = \ln(\sigma(t)/\sigma_{\min}) / \ln(\sigma_{\max}/\sigma_{\min})` (continuous: ``labels`` = sigma(t);
discrete: the nearest level of the table, clamped to it).

The adapted model returns the score (``parameterization="score"``, sdekit's default), exactly
``get_score_fn(sde, model, continuous=...)(x, t')``; measured to float64 round-off in
``tests/adapters/test_score_sde.py``. Call ``model.eval()`` first for sampling and likelihoods, as
``get_score_fn(train=False)`` does.
"""

from __future__ import annotations

import difflib
import math
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ..errors import AdapterError, ModelOutputError
from ..symbolic.zoo import VPSDE, SubVPSDE
from ._noise_levels import (
    check_callable,
    check_noise_range,
    check_positive_number,
    noise_to_signal,
    probe,
    sde_spanning,
    times_of,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..symbolic.sde import SDE

__all__ = ["SCORE_SDE_NAMES", "ScoreSDEModel", "from_score_sde"]

SCORE_SDE_NAMES: tuple[str, ...] = ("vpsde", "subvpsde", "vesde")
"""score_sde's SDE names (``config.training.sde``), the values of ``from_score_sde(sde_name=...)``."""

_ADAPTER = "from_score_sde"
_DEFAULTS = {"beta_min": 0.1, "beta_max": 20.0, "sigma_min": 0.01, "sigma_max": 50.0}
"""score_sde's defaults (``sde_lib``; the CIFAR-10 VE configs' sigma_max = 50)."""


def _ddpm_std_table(beta_min: float, beta_max: float, n: int) -> torch.Tensor:
    r""":math:`\sqrt{1 - \bar\alpha_i}`, i < n, of score_sde's discrete VP table (module docstring), float64."""
    betas = torch.linspace(beta_min / n, beta_max / n, n, dtype=torch.float64)
    return torch.sqrt(1 - torch.cumprod(1 - betas, dim=0))


class ScoreSDEModel(torch.nn.Module):
    """A score_sde_pytorch network as an sdekit score model ``model(x, t)`` (module docstring for the conventions).

    A ``torch.nn.Module`` holding the network as ``network`` (``.parameters()``, ``.eval()``, ``.to()`` and
    :func:`sdekit.logp`'s ``adjoint`` reach it). :meth:`labels` is what the network receives at sdekit time t.
    """

    parameterization: ClassVar[str] = "score"
    """The model returns the score, sdekit's default parameterization."""

    def __init__(
        self,
        network: Any,
        sde: SDE,
        sde_name: str,
        continuous: bool,
        n: int,
        sigma_range: tuple[float, float] | None = None,
    ):
        super().__init__()
        self.network = network
        self.sde = sde
        self.sde_name = sde_name
        self.continuous = continuous or sde_name == "subvpsde"  # get_score_fn: sub-VP is always continuous
        self.N = n
        self.sigma_range = sigma_range
        table = _ddpm_std_table(sde.beta_min, sde.beta_max, n) if sde_name == "vpsde" and not self.continuous else None
        self.register_buffer("std_table", table, persistent=False)

    def _level_index(self, sigma: torch.Tensor) -> torch.Tensor:
        """NCSN's label: the index, largest noise first, of the table level nearest to ``sigma`` in log (clamped)."""
        lo, hi = self.sigma_range  # type: ignore[misc]
        frac = torch.log(sigma / lo) / math.log(hi / lo)  # score_sde's t' (module docstring)
        return torch.round((1 - frac) * (self.N - 1)).clamp(0, self.N - 1).long()

    def labels(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """The network's second argument at sdekit time t, shape (batch,) (module docstring)."""
        tt = times_of(t, x)
        if self.sde_name == "vesde":
            sigma = noise_to_signal(self.sde, tt, tt)  # float64: the noise level of the state
            return sigma.to(x.dtype) if self.continuous else self._level_index(sigma)
        return (tt * (999 if self.continuous else self.N - 1)).to(x.dtype)

    def std(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """The ``std`` a VP network's output is divided by, shape (batch, 1, ..., 1), ``x``'s dtype."""
        tt = times_of(t, x)
        if self.std_table is None:
            std = self.sde.marginal.sigma(tt)
        else:
            std = self.std_table.to(tt.device)[(tt * (self.N - 1)).long()]
        return std.to(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The score at (x, t); t of shape (batch,) or a single time."""
        out = self.network(x, self.labels(x, t))
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelOutputError(
                f"{_ADAPTER}: model(x, labels) returned {got} for x of shape {tuple(x.shape)}; a score_sde network "
                f"returns a tensor shaped like x"
            )
        return out if self.sde_name == "vesde" else -out / self.std(x, t)


def _check_name(sde_name: Any) -> str:
    """``sde_name`` lower-cased if it is one of :data:`SCORE_SDE_NAMES`, else AdapterError with the close match."""
    name = sde_name.lower() if isinstance(sde_name, str) else sde_name
    if name not in SCORE_SDE_NAMES:
        close = difflib.get_close_matches(str(name), SCORE_SDE_NAMES, n=1, cutoff=0.3)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise AdapterError(
            f"{_ADAPTER}: sde_name must be one of {', '.join(map(repr, SCORE_SDE_NAMES))} (score_sde's "
            f"config.training.sde), got {sde_name!r}{hint}"
        )
    return name


def _check_parameters(name: str, given: dict[str, Any], continuous: Any, N: Any) -> dict[str, float]:
    """The SDE's parameters (score_sde's defaults for the ones not given), each checked; AdapterError for a
    parameter of the other family, a bad range, a non-bool ``continuous`` or an ``N`` that is not used."""
    own = ("sigma_min", "sigma_max") if name == "vesde" else ("beta_min", "beta_max")
    for key, value in given.items():
        if value is not None and key not in own:
            raise AdapterError(
                f"{_ADAPTER}: {key} does not apply to sde_name={name!r}; its parameters are {own[0]} and {own[1]}"
            )
    if not isinstance(continuous, bool):
        raise AdapterError(
            f"{_ADAPTER}: continuous must be True or False (config.training.continuous), got {continuous!r}"
        )
    if N is not None and (continuous or name == "subvpsde"):
        raise AdapterError(
            f"{_ADAPTER}: N (config.model.num_scales) is used only by discrete-time 'vpsde' and 'vesde' models "
            f"(continuous=False); drop it, or pass continuous=False"
        )
    if N is not None and (isinstance(N, bool) or not isinstance(N, int) or N < 2):
        raise AdapterError(f"{_ADAPTER}: N must be an integer >= 2 (config.model.num_scales), got {N!r}")
    values = {key: _DEFAULTS[key] if given[key] is None else given[key] for key in own}
    if name == "vesde":
        lo, hi = check_noise_range(values["sigma_min"], values["sigma_max"], _ADAPTER)
        return {"sigma_min": lo, "sigma_max": hi}
    lo = check_positive_number(values["beta_min"], "beta_min", _ADAPTER)
    hi = check_positive_number(values["beta_max"], "beta_max", _ADAPTER)
    if not lo < hi:
        raise AdapterError(f"{_ADAPTER}: beta_min must be smaller than beta_max, got beta_min={lo:g}, beta_max={hi:g}")
    return {"beta_min": lo, "beta_max": hi}


def from_score_sde(
    model: Any,
    sde_name: str,
    *,
    beta_min: float | None = None,
    beta_max: float | None = None,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    continuous: bool = True,
    N: int | None = None,
    shape: tuple[int, ...] | None = None,
) -> tuple[ScoreSDEModel, SDE]:
    r"""Adapt a score_sde_pytorch network ``model(x, labels)`` to sdekit (conventions: module docstring).

    Args:
        model: the network (``mutils.create_model(config)``, or any callable ``model(x, labels)`` returning a tensor
            shaped like x).
        sde_name: ``"vpsde"``, ``"subvpsde"`` or ``"vesde"`` (``config.training.sde``; case-insensitive).
        beta_min: VP / sub-VP :math:`\beta(0)` (``config.model.beta_min``, default 0.1).
        beta_max: VP / sub-VP :math:`\beta(1)` (``config.model.beta_max``, default 20).
        sigma_min: VE smallest noise level (``config.model.sigma_min``, default 0.01).
        sigma_max: VE largest noise level (``config.model.sigma_max``, default 50).
        continuous: ``config.training.continuous``: True for continuous-time checkpoints, False for the
            discrete DDPM / NCSN ones (ignored for sub-VP, as in ``get_score_fn``).
        N: ``config.model.num_scales`` of a discrete-time ``vpsde`` / ``vesde`` model (default 1000); only with
            ``continuous=False``.
        shape: the event shape of one sample, e.g. ``(3, 32, 32)``: the network is called once now (batch of 2,
            at ``sde.T`` and ``sde.default_eps``) and a wrong output shape or non-finite values raise here. ``None``:
            no probe (sdekit's entry points still check every model output).

    Returns:
        ``(model, sde)``: a :class:`ScoreSDEModel` returning the score (sdekit's default parameterization) and the
        matching :class:`~sdekit.VPSDE`, :class:`~sdekit.SubVPSDE` or :class:`~sdekit.VESDE`.

    Raises:
        AdapterError: ``model`` not callable, an unknown ``sde_name`` (the message lists the names), parameters of
            the other family (``sigma_min`` for ``"vpsde"``, ...), ``sigma_min >= sigma_max`` or
            ``beta_min >= beta_max``, a non-positive value, ``N`` without ``continuous=False``, a bad ``shape``.
        ModelOutputError: the probe call (with ``shape``) returned the wrong shape or non-finite values.

    Example::

        model, sde = sdekit.adapters.from_score_sde(net, "vesde", sigma_max=50.0, shape=(3, 32, 32))
        x = sdekit.sample(model.eval(), sde, (16, 3, 32, 32), solver="pc", steps=1000)
    """
    check_callable(model, "model", _ADAPTER, "model(x, labels)")
    name = _check_name(sde_name)
    given = {"beta_min": beta_min, "beta_max": beta_max, "sigma_min": sigma_min, "sigma_max": sigma_max}
    params = _check_parameters(name, given, continuous, N)
    n = 1000 if N is None else N
    if name == "vesde":
        sde: SDE = sde_spanning("ve", params["sigma_min"], params["sigma_max"])
        sigma_range = (params["sigma_min"], params["sigma_max"])
    else:
        sde = (VPSDE if name == "vpsde" else SubVPSDE)(**params)
        sigma_range = None
    adapted = ScoreSDEModel(model, sde, name, continuous, n, sigma_range)
    probe(adapted, sde, shape, _ADAPTER, "model(x, labels)")
    return adapted, sde
