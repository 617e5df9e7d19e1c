r"""The digits demo's data (shipped with sdekit: ``data/digits.npz``), its split, scaling and the sizes of a run.

The file holds scikit-learn's 8 x 8 handwritten digits (``sklearn.datasets.load_digits``: 1,797 images, values
0..16, the test set of the UCI "Optical Recognition of Handwritten Digits" data, CC BY 4.0; ``data/README.md``
says where it comes from and how it was made) as uint8, so the demo needs neither scikit-learn nor a download.

Scaling: the 17 levels :math:`k \in \{0, \dots, 16\}` map to [-1, 1] by uniform dequantization,
:math:`x = 2(k + u)/17 - 1`, :math:`u \sim U[0, 1)` (:func:`sdekit.dequantize` with ``levels=17``); bits/dim of
the discrete data then follow from :func:`sdekit.bits_per_dim` (``levels=17``: offset :math:`\log_2(17/2)`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._dequantize import dequantize

__all__ = [
    "DATA_FILE",
    "IMAGES_SHA256",
    "LABELS_SHA256",
    "LEVELS",
    "N_IMAGES",
    "TEST_EVERY",
    "VE_SIGMA_MAX",
    "DigitsConfig",
    "DIGITS_FULL",
    "DIGITS_QUICK",
    "DequantizedImages",
    "load_digits",
    "split",
    "level_centres",
]

DATA_FILE = Path(__file__).with_name("data") / "digits.npz"
IMAGES_SHA256 = "8f26b2bd9d135c256808f68f14fdabddde6d9c7f869ae419704b051f0f14b3b3"
"""sha256 of ``images.tobytes()`` (uint8, C order, shape (1797, 8, 8)), as made from scikit-learn 1.9.1."""
LABELS_SHA256 = "8ba4f891220f5e4c9c819638d1602d74b83618f167043c6da52a2a247841ddf0"
"""sha256 of ``labels.tobytes()`` (uint8, shape (1797,))."""
N_IMAGES = 1797
LEVELS = 17  # values 0..16: the count of set pixels in a 4 x 4 block of the original 32 x 32 bitmaps
TEST_EVERY = 6
"""Image i is a test image when i % 6 == 0 (300 test images, 1,497 training images): deterministic, no random
generator involved, and spread evenly over the file's order (writers and classes)."""

VE_SIGMA_MAX = 20.0
r"""``VESDE(sigma_max=20)`` for the digits (the built-in default is 50, sized for CIFAR-10).

Song & Ermon (2020, technique 1) take :math:`\sigma_{\max}` about the largest distance between two training
points, so that the reverse process can move any point to any other; here it is 9.6 (in [-1, 1], d = 64). Twice that
keeps the prior :math:`N(0, \sigma_{\max}^2 I)` close to :math:`p_T`: by convexity
:math:`KL(p_T \| N(0, \sigma_{\max}^2 I)) \le E|x_0|^2 / (2\sigma_{\max}^2) = 64 \cdot 0.72/800 = 0.06` nats, at most
0.0013 bits/dim of bias in the reported bits/dim, while the log-SNR range to cover is 19% shorter than with 50."""


@dataclass(frozen=True)
class DigitsConfig:
    """Sizes of one digits run (``--quick`` or full)."""

    train_steps: int
    batch: int
    width: int  # channels at full resolution (DigitsNet's channels)
    lr: float
    weighting: str  # dsm's weighting: "sigma2", the eps regression |eps_hat - z|^2 (DDPM's simple loss) ...
    time_sampling: str  # ... at times uniform in [1e-5, T]
    n_samples: int  # samples per sampler (the grid shows the first 64; all enter the nearest-neighbour check)
    few_steps: int  # NFE of sdekit.sample's default few-step sampler
    ode_tol: float  # rtol = atol of the adaptive sampler
    n_logp: int  # test images whose bits/dim are computed (the first n of the test split)
    n_probes: int  # Hutchinson probes per image
    logp_tol: float  # rtol = atol of sdekit.logp


DIGITS_FULL = DigitsConfig(
    train_steps=1500,
    batch=128,
    width=24,
    lr=2e-3,
    weighting="sigma2",
    time_sampling="uniform",
    n_samples=512,
    few_steps=20,
    ode_tol=1e-3,
    n_logp=300,
    n_probes=1,
    logp_tol=1e-4,
)
DIGITS_QUICK = replace(DIGITS_FULL, train_steps=300, batch=64, width=16, n_samples=128, n_logp=64, logp_tol=1e-3)


def load_digits(path: Path = DATA_FILE) -> tuple[np.ndarray, np.ndarray]:
    """The shipped images (uint8, (1797, 8, 8), values 0..16) and labels (uint8, (1797,)), checksums verified."""
    with np.load(path) as f:
        images, labels = f["images"], f["labels"]
    for name, array, digest in (("images", images, IMAGES_SHA256), ("labels", labels, LABELS_SHA256)):
        if hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest() != digest:
            raise ValueError(f"{path}: the {name} array does not match its sha256; reinstall sdekit")
    return images, labels


def split(images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) integer levels as int64 tensors of shape (n, 1, 8, 8): image i is a test image when
    i % :data:`TEST_EVERY` == 0."""
    k = torch.from_numpy(images.astype(np.int64))[:, None]
    test = torch.arange(k.shape[0]) % TEST_EVERY == 0
    return k[~test], k[test]


def level_centres(k: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The centre of each level's cell in [-1, 1], :math:`2(k + 1/2)/17 - 1` (the images as points, without noise)."""
    return 2 * (k.to(dtype) + 0.5) / LEVELS - 1


class DequantizedImages:
    """Training batches: images drawn uniformly with replacement from integer levels ``k`` (n, C, H, W), each
    dequantized afresh, :math:`x = 2(k + u)/17 - 1` (:func:`sdekit.dequantize`, ``levels=17``)."""

    def __init__(self, k: torch.Tensor) -> None:
        self.k = k

    def sample(
        self, n: int, generator: torch.Generator, *, dtype: torch.dtype = torch.float32, device: Any = None
    ) -> torch.Tensor:
        """``n`` dequantized images in [-1, 1) (indices, then the dequantization noise, from ``generator``)."""
        idx = torch.randint(0, self.k.shape[0], (n,), generator=generator, device=generator.device)
        return dequantize(self.k.to(generator.device)[idx], levels=LEVELS, generator=generator, dtype=dtype).to(device)
