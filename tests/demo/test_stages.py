"""The demo's stages on their own: a failing model is a table entry, not a crash."""

from __future__ import annotations

import torch

from sdekit.demo import _config, _stages

SEED = 0


def test_failing_model_is_reported_not_a_crash():
    # A model with non-finite output: sdekit.sample and sdekit.logp raise ModelOutputError (checked up
    # front); the demo records the failure in its tables instead of stopping.
    from sdekit import VPSDE
    from sdekit._stats import random_directions
    from sdekit.analytic import GaussianMixture

    sde = VPSDE()
    data = GaussianMixture(_config.MEANS, _config.STDS, _config.WEIGHTS)
    oracle = data.diffuse(sde)
    gen = torch.Generator().manual_seed(SEED)

    def bad(x, t):
        return torch.full_like(x, float("nan"))

    models = {"learned": (bad, "score"), "exact": (oracle, "score")}
    x_T = oracle.at(sde.T).sample(200, gen, dtype=torch.float32)
    runs, finest = _stages.sample_all(
        models, sde, ["euler"], _config.QUICK, (5,), x_T, oracle.at(1e-3), random_directions(2, 4), 1e-3, SEED
    )
    by_model = {r.model: r for r in runs}
    assert "ModelOutputError" in by_model["learned"].error and by_model["learned"].ks_ratio is None
    assert by_model["exact"].error is None and ("euler", "learned") not in finest
    x = oracle.sample(20, 1e-3, gen, dtype=torch.float32)
    out, values = _stages.held_out_logp(models, sde, oracle, data, x, 1e-3)
    assert "ModelOutputError" in out["learned"]["error"] and bool(values["learned"].isnan().all())
    assert out["exact"]["gap_abs_max"] < 3e-3
