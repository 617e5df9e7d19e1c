r"""Built-in SDEs, declared exactly as a user would declare theirs.

Nothing here states a marginal, prior or reverse drift: those are derived. The
published closed forms (score_sde's ``marginal_prob``, EDM's sigma(t) = t, ...) live in
the tests, as checks.
"""

from __future__ import annotations

import sympy as sp

from .sde import SDE

__all__ = ["VPSDE", "SubVPSDE", "VESDE", "CosineVPSDE", "EDMSDE", "OrnsteinUhlenbeck", "BrownianMotion"]


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
