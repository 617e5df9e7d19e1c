r"""``sdekit demo``: the whole framework on an embedded 2-D Gaussian mixture, nothing to download.

What one run does (every number is compared with an exact answer):

1. **Data.** A 3-component 2-D Gaussian mixture :math:`p_0` (:class:`sdekit.analytic.GaussianMixture`).
   Carried by any affine SDE its marginals :math:`p_t` stay exact mixtures (``data.diffuse(sde)``), so the
   exact score :math:`\nabla\log p_t` and density :math:`\log p_t` are available as an oracle.
2. **Training.** A small MLP predicting the noise (``parameterization="eps"``) is trained with
   :func:`sdekit.losses.dsm` (likelihood weighting :math:`\lambda = g^2` and likelihood time sampling
   :math:`q(t)\propto g^2/\sigma^2`, i.e. uniform in log-SNR). The network sees the input scaled by the
   marginal, :math:`(x - \alpha\bar\mu - m)/\sqrt{\alpha^2 s_d^2 + \sigma^2}`, and the time as the normalised
   half log-SNR :math:`\log(\sigma/\alpha)`; both come from ``sde.marginal``, so the same network works for
   VP, sub-VP, VE, EDM and a user's affine SDE.
3. **Sampling.** Every solver of the set (default: ``euler``, ``srk`` adaptive, ``ode`` (dopri5, adaptive),
   ``exp2`` (exponential integrator), ``pc`` (predictor-corrector)) runs a ladder of step counts or
   tolerances, from the learned model and from the exact score, starting from the same exact draws of
   :math:`p_T`. Samples at :math:`t = \epsilon` (``denoise=False``) are compared with the exact
   :math:`p_\epsilon` by the sliced Kolmogorov–Smirnov test (:mod:`sdekit._stats`): the metric is
   :math:`D / D_{\rm crit}` with :math:`D_{\rm crit} = \sqrt{-\ln(\alpha/(2k))/2}/\sqrt n`, so a value
   :math:`\le 1` means the n samples cannot be told from the exact law at family-wise level :math:`\alpha`.
4. **Likelihood.** :func:`sdekit.logp` (PF-ODE, exact trace) of held-out draws of :math:`p_\epsilon` for the
   learned model and the exact score, both with the exact :math:`p_T` as prior, against the exact
   :math:`\log p_\epsilon`. The mean gap :math:`E[\log p_\epsilon - \log p_\theta]` estimates
   :math:`KL(p_\epsilon\,\|\,p_\theta) \ge 0`; the exact score's gap is solver error only. The reference
   is the KL of the best single Gaussian (same mean and covariance), a model that learned nothing beyond
   second moments.
5. **Report.** ``report.md`` + ``report.json`` (every number) and PNGs in ``--out``.

``sdekit demo --data digits`` (:func:`digits_demo`) runs the same job on scikit-learn's 8 x 8 handwritten digits,
shipped as ``data/digits.npz``: a small convolutional network (:class:`DigitsNet`) per SDE (VP and VE), few-step and
adaptive samples beside real digits, test-set bits/dim by :func:`sdekit.logp` (Hutchinson trace) and a
nearest-neighbour check that samples are not copies of training images (``docs/images.md``).

Nothing here is written per SDE: alpha, sigma, prior, reverse drift and PF-ODE come from the SDE object.

Modules (private; the names of ``__all__`` are re-exported here and imported on first use, so that building
the ``sdekit`` parser, which imports :mod:`sdekit.demo._cli`, loads neither torch nor sympy):

- ``_cli``: the options, their checks and the entry point :func:`run` (imports no torch);
- ``_config``: the embedded mixture, the statistical levels, :class:`DemoConfig` (``QUICK``, ``FULL``);
- ``_model``: :class:`ScoreNet` and its MLP, :class:`FourierMLP` (also used by ``examples/train_2d_mixture.py``);
- ``_stages``: training, the sampling runs, the likelihoods, the paths of the figures;
- ``_diagnose``: the outliers of the sampling table and their paired reruns;
- ``_results``, ``_report``, ``_report_outliers``: the records, the headline, ``report.md`` and ``report.json``;
- ``_plots``: the PNGs; ``_run``: :func:`demo`, the stages in order;
- ``_digits_data``, ``_digits_model``, ``_digits_run``, ``_digits_report``: ``--data digits`` (the shipped data and
  its split, :class:`DigitsNet`, the stages, the report and figures).

The library never imports this package; only the ``sdekit`` console script does (:mod:`sdekit.cli`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names for type checkers; imported lazily at run time
    from ._cli import DESCRIPTION, HELP, DemoError, add_arguments, run
    from ._config import FULL, MEANS, QUICK, STDS, WEIGHTS, DemoConfig
    from ._digits_model import DigitsNet
    from ._digits_run import digits_demo
    from ._model import FourierMLP, ScoreNet
    from ._results import DemoReport, SampleRun, load_report
    from ._run import demo

# Public name -> the private module that defines it.
_EXPORTS: dict[str, str] = {
    "DESCRIPTION": "._cli",
    "HELP": "._cli",
    "DemoError": "._cli",
    "add_arguments": "._cli",
    "run": "._cli",
    "FULL": "._config",
    "MEANS": "._config",
    "QUICK": "._config",
    "STDS": "._config",
    "WEIGHTS": "._config",
    "DemoConfig": "._config",
    "DigitsNet": "._digits_model",
    "digits_demo": "._digits_run",
    "FourierMLP": "._model",
    "ScoreNet": "._model",
    "DemoReport": "._results",
    "SampleRun": "._results",
    "load_report": "._results",
    "demo": "._run",
}

__all__ = [
    "demo",
    "run",
    "add_arguments",
    "HELP",
    "DESCRIPTION",
    "DemoError",
    "DemoConfig",
    "QUICK",
    "FULL",
    "MEANS",
    "STDS",
    "WEIGHTS",
    "ScoreNet",
    "FourierMLP",
    "DigitsNet",
    "digits_demo",
    "DemoReport",
    "SampleRun",
    "load_report",
]


def __getattr__(name: str) -> Any:
    """Import a re-exported name on first use and cache it."""
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
