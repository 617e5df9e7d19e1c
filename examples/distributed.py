"""Sample and compute log-likelihoods on several processes with ``distributed=True`` (docs/distributed.md).

Run it on 2 CPU processes and in one process; the two files hold the same bits::

    torchrun --standalone --nproc-per-node 2 examples/distributed.py --out two.pt
    python examples/distributed.py --out one.pt
    python -c "import torch; a, b = map(torch.load, ['one.pt', 'two.pt']); print(all(a[k].equal(b[k]) for k in a))"

Under torchrun every rank runs this same script: the process group is initialised from torchrun's environment
(gloo on CPU; use nccl and ``device=f"cuda:{LOCAL_RANK}"`` on GPUs), every rank makes the same calls and rank 0
saves the gathered results. Alone (no ``WORLD_SIZE``) the calls run in this process with the same ``chunk_size``.
"""

from __future__ import annotations

import argparse
import os

import torch

import sdekit
from sdekit.analytic import GaussianMixture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="where rank 0 saves {'x', 'x_adaptive', 'logp'} (torch.save)")
    args = parser.parse_args()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        torch.distributed.init_process_group("gloo")
    sde = sdekit.VPSDE()
    model = GaussianMixture([[-2.0, 0.0], [2.0, 1.0]], [0.5, 0.3]).diffuse(sde)
    # chunk_size fixes the work of each chunk, so one process and any number of ranks compute the same chunks
    common = {"chunk_size": 500, "distributed": distributed}
    x = sdekit.sample(
        model, sde, (2000, 2), solver="euler", steps=50, generator=torch.Generator().manual_seed(0), **common
    )
    x_adaptive = sdekit.sample(
        model, sde, (1000, 2), solver="dopri5", generator=torch.Generator().manual_seed(1), **common
    )
    with torch.no_grad():
        lp = sdekit.logp(
            model,
            sde,
            x[:1000],
            trace="hutchinson",
            rtol=1e-4,
            atol=1e-4,
            generator=torch.Generator().manual_seed(2),
            **common,
        )
    if not distributed or torch.distributed.get_rank() == 0:
        torch.save({"x": x, "x_adaptive": x_adaptive, "logp": lp}, args.out)
        print(f"saved {args.out}: samples {tuple(x.shape)}, mean log p {lp.mean():.4f}")
    if distributed:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
