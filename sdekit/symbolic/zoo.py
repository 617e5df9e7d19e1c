r"""Built-in SDEs, declared exactly as a user would declare theirs.

Nothing here states a marginal, prior or reverse drift: those are derived. The
published closed forms (score_sde's ``marginal_prob``, EDM's sigma(t) = t, ...) live in
the tests, as checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sympy as sp
import torch

from ..errors import SDEDeclarationError
from ._tabulated import log_alpha_bar_function
from .sde import SDE

__all__ = ["VPSDE", "SubVPSDE", "VESDE", "CosineVPSDE", "EDMSDE", "OrnsteinUhlenbeck", "BrownianMotion"]
"""The built-in SDEs with defaults (each has a short name of the CLI, ``sdekit._load.SHORT_NAMES``).
:class:`DiscreteVPSDE` is declared here too but needs a table, so it is exported as ``sdekit.DiscreteVPSDE`` only."""


class VPSDE(SDE):
    r"""Variance-preserving SDE (DDPM's continuum limit, Song et al. 2021).

    .. math:: dx = -\tfrac12\beta(t)\,x\,dt + \sqrt{\beta(t)}\,dW,\qquad
              \beta(t) = \beta_{\min} + t(\beta_{\max} - \beta_{\min}),\ t\in[0, 1].
    """

    beta_min = sp.Rational(1, 10)
    beta_max = 20

    def beta(self, t):
        """Noise rate beta(t), linear in t."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def drift(self, x, t):
        return -self.beta(t) * x / 2

    def diffusion(self, x, t):
        return sp.sqrt(self.beta(t))


class SubVPSDE(VPSDE):
    r"""Sub-VP SDE (Song et al. 2021): VP drift, diffusion reduced so the variance stays below VP's.

    .. math:: dx = -\tfrac12\beta(t)\,x\,dt + \sqrt{\beta(t)\,(1 - e^{-2\int_0^t\beta})}\,dW.
    """

    def diffusion(self, x, t):
        integrated = self.beta_min * t + (self.beta_max - self.beta_min) * t**2 / 2
        return sp.sqrt(self.beta(t) * (1 - sp.exp(-2 * integrated)))


class VESDE(SDE):
    r"""Variance-exploding SDE (SMLD/NCSN continuum limit).

    .. math:: dx = \sigma_{\min}\left(\tfrac{\sigma_{\max}}{\sigma_{\min}}\right)^t
              \sqrt{2\log\tfrac{\sigma_{\max}}{\sigma_{\min}}}\,dW.

    The derived variance is the exact :math:`\sigma_{\min}^2 (\sigma_{\max}/\sigma_{\min})^{2t}
    - \sigma_{\min}^2`, not the common approximation :math:`\sigma(t)^2` that drops
    :math:`\sigma_{\min}^2`.
    """

    sigma_min = sp.Rational(1, 100)
    sigma_max = 50

    def diffusion(self, x, t):
        ratio = self.sigma_max / self.sigma_min
        return self.sigma_min * ratio**t * sp.sqrt(2 * sp.log(ratio))

    def drift(self, x, t):
        return sp.S.Zero


class CosineVPSDE(SDE):
    r"""Variance-preserving SDE with the cosine schedule of Nichol & Dhariwal (2021).

    .. math:: \beta(t) = \frac{\pi}{1+s}\tan\!\Big(\frac{\pi}{2}\frac{t+s}{1+s}\Big),\qquad
              dx = -\tfrac12\beta\,x\,dt + \sqrt\beta\,dW,

    so :math:`\alpha(t)^2 = \cos^2(\tfrac{\pi}{2}\tfrac{t+s}{1+s})/\cos^2(\tfrac{\pi}{2}\tfrac{s}{1+s})`.
    beta blows up at t = 1, so the horizon is T = 0.995 (alpha(T) ~ 0.008).
    """

    s = sp.Rational(8, 1000)
    T = 0.995

    def beta(self, t):
        """Noise rate beta(t) of the cosine schedule."""
        return sp.pi / (1 + self.s) * sp.tan(sp.pi / 2 * (t + self.s) / (1 + self.s))

    def drift(self, x, t):
        return -self.beta(t) * x / 2

    def diffusion(self, x, t):
        return sp.sqrt(self.beta(t))


class EDMSDE(SDE):
    r"""The EDM / "variance exploding with sigma(t) = t" SDE (Karras et al. 2022).

    .. math:: dx = \sqrt{2t}\,dW,\qquad t\in[0, 80],

    so :math:`\sigma(t) = t`; sampling starts from ``default_eps`` = 0.002.
    """

    T = 80.0
    default_eps = 0.002

    def drift(self, x, t):
        return sp.S.Zero

    def diffusion(self, x, t):
        return sp.sqrt(2 * t)


class OrnsteinUhlenbeck(SDE):
    r"""Ornstein–Uhlenbeck process :math:`dx = -\theta x\,dt + \sigma\,dW`.

    The defaults give the :math:`dx = -x\,dt + \sqrt2\,dB` of the background notes, whose
    stationary law is N(0, 1); the horizon T = 5 brings x_T close to it.
    """

    theta = 1
    sigma = sp.sqrt(2)
    T = 5.0

    def drift(self, x, t):
        return -self.theta * x

    def diffusion(self, x, t):
        return self.sigma


class BrownianMotion(SDE):
    r"""Scaled Brownian motion :math:`dx = \sigma\,dW`."""

    sigma = 1

    def drift(self, x, t):
        return sp.S.Zero

    def diffusion(self, x, t):
        return self.sigma


def _table(values: Any, name: str) -> np.ndarray:
    """A 1-D float64 numpy copy of ``values`` (tensor on any device, array or sequence), or a declaration error."""
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    try:
        out = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise SDEDeclarationError(f"{name} must be a 1-D sequence of numbers, got {type(values).__name__}") from err
    if out.ndim != 1 or out.size < 2 or not np.all(np.isfinite(out)):
        raise SDEDeclarationError(
            f"{name} must be a 1-D table of at least 2 finite numbers (one per timestep), got shape {out.shape}"
        )
    return out


class DiscreteVPSDE(SDE):
    r"""The variance-preserving SDE of a discrete-time model trained on a beta table (DDPM; diffusers' schedulers).

    Such a model sees :math:`x_n = \sqrt{\bar\alpha_n}\,x_0 + \sqrt{1 - \bar\alpha_n}\,\varepsilon` at timestep
    n = 0, ..., N - 1, :math:`\bar\alpha_n = \prod_{j \le n}(1 - \beta_j)`. With :math:`L(t) = \log\bar\alpha(t)` the
    tabulated function of :mod:`sdekit.symbolic._tabulated` (knots :math:`t = n + 1`, :math:`L(0) = 0`, linear in
    the log-SNR between knots) the SDE is declared as

    .. math:: dx = \tfrac12 L'(t)\,x\,dt + \sqrt{-L'(t)}\,dW, \qquad t \in [0, N],

    and sdekit derives :math:`\alpha(t) = e^{L(t)/2}`, :math:`\sigma(t)^2 = 1 - e^{L(t)}` (so
    :math:`\alpha^2 = \bar\alpha_n` at :math:`t = n + 1`, to float64 round-off), the prior, the reverse SDE and the
    probability-flow ODE, as for any other SDE.

    **Time.** :math:`t = n + 1`: t = 0 is the clean data (:math:`\bar\alpha = 1`), t = n + 1 the training
    timestep n, T = N the last one. Integer times are exact in float32 too, so a model evaluated at
    :meth:`to_timestep` of a grid point gets exactly diffusers' integer timestep. ``default_eps`` = 1 (timestep
    0, where diffusers' samplers stop). Between timesteps the marginal is the log-SNR interpolation, and the
    diffusion on [0, 1] is :math:`\approx \beta_0` (the noise-to-signal ratio grows linearly from 0).

    Build it from the betas (``DiscreteVPSDE(betas)``, :math:`\bar\alpha` as their float64 cumulative product)
    or from the cumulative products themselves (:meth:`from_alphas_cumprod`, e.g. a scheduler's
    ``alphas_cumprod``: the table the network was trained against, bit for bit).

    Raises:
        SDEDeclarationError: a table that is not 1-D, has fewer than 2 entries, or betas outside (0, 1).
    """

    default_eps = 1.0

    def __init__(self, betas: Any = None, *, alphas_cumprod: Any = None) -> None:
        if (betas is None) == (alphas_cumprod is None):
            raise SDEDeclarationError("DiscreteVPSDE needs exactly one table: betas, or alphas_cumprod=")
        if betas is not None:
            b = _table(betas, "betas")
            bad = np.flatnonzero(~((b > 0) & (b < 1)))
            if bad.size:
                k = int(bad[0])
                raise SDEDeclarationError(f"every beta must lie in (0, 1), got betas[{k}] = {b[k]!r}")
            ab = np.cumprod(1.0 - b)
        else:
            ab = _table(alphas_cumprod, "alphas_cumprod")
        n = ab.size
        self._log_alpha_bar = log_alpha_bar_function(np.arange(1, n + 1, dtype=np.float64), ab)
        super().__init__(T=float(n))

    @classmethod
    def from_betas(cls, betas: Any) -> DiscreteVPSDE:
        r"""The SDE of the table :math:`\bar\alpha_n = \prod_{j \le n}(1 - \beta_j)` (float64 product)."""
        return cls(betas)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: Any) -> DiscreteVPSDE:
        r"""The SDE whose :math:`\alpha(n + 1)^2` is ``alphas_cumprod[n]`` (strictly decreasing, in (0, 1))."""
        return cls(alphas_cumprod=alphas_cumprod)

    def _declaration_data(self) -> tuple[Any, ...]:
        return (self._log_alpha_bar.digest,)

    def drift(self, x, t):
        return sp.diff(self._log_alpha_bar(t), t) * x / 2

    def diffusion(self, x, t):
        return sp.sqrt(-sp.diff(self._log_alpha_bar(t), t))

    @property
    def num_train_timesteps(self) -> int:
        """N, the number of training timesteps (= T)."""
        return len(self._log_alpha_bar.knots) - 1

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        r"""The table :math:`\bar\alpha_0, \dots, \bar\alpha_{N-1}` (float64)."""
        return torch.from_numpy(self._log_alpha_bar.log_alpha_bar[1:].copy()).exp()

    @staticmethod
    def to_timestep(t: Any) -> Any:
        """The (fractional) training timestep n = t - 1 of sdekit time t (tensor or number)."""
        return t - 1

    @staticmethod
    def from_timestep(timestep: Any) -> Any:
        """The sdekit time t = n + 1 of training timestep n (tensor or number)."""
        return timestep + 1

    def __repr__(self) -> str:
        ab = self._log_alpha_bar._alpha_bar
        return f"DiscreteVPSDE(N={ab.size}, alpha_bar=[{ab[0]:.6g} ... {ab[-1]:.6g}], T={self.T:g})"


class CLDSDE(SDE):
    r"""Critically-damped Langevin diffusion (Dockhorn, Vahdat & Kreis, ICLR 2022): every pixel x gets a velocity v.

    .. math::
        d\begin{pmatrix}x\\ v\end{pmatrix} = \begin{pmatrix}\beta M^{-1} v\\ -\beta x - \Gamma\beta M^{-1} v
        \end{pmatrix}dt + \begin{pmatrix}0 & 0\\ 0 & \sqrt{2\Gamma\beta}\end{pmatrix} dW_t,\qquad t\in[0, 1],

    with :math:`\beta = 4`, :math:`M = 1/4`, :math:`\Gamma = 1` (critical damping :math:`\Gamma^2 = 4M`: the drift
    matrix has the double eigenvalue :math:`-\beta\Gamma/(2M) = -8`), the paper's values. The equilibrium is
    :math:`N(0, 1) \otimes N(0, M)`. Data live in x (``data_components = ("x",)``); the initial velocity is drawn
    from :math:`N(0, \gamma M)` (parameter ``gamma``, 0.04 in the paper; :meth:`initial_covariance`), which
    ``marginal.cov(t, given="data")`` and the prior account for. Tensors have shape ``(batch, 2, *event_shape)``
    (``[:, 0]`` is x, ``[:, 1]`` is v). Everything else (marginal, prior, reverse SDE, PF-ODE) is derived.
    """

    components = ("x", "v")
    data_components = ("x",)
    beta = 4
    M = sp.Rational(1, 4)
    Gamma = 1
    gamma = sp.Rational(1, 25)

    def drift(self, x, v, t):
        return (self.beta / self.M * v, -self.beta * x - self.Gamma * self.beta / self.M * v)

    def diffusion(self, x, v, t):
        return sp.Matrix([[0, 0], [0, sp.sqrt(2 * self.Gamma * self.beta)]])

    def initial_covariance(self):
        """:math:`\\mathrm{diag}(0, \\gamma M)`: x from the data, :math:`v_0 \\sim N(0, \\gamma M)`."""
        return sp.diag(0, sp.sympify(self.gamma) * sp.sympify(self.M))
