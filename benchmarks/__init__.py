"""sdekit benchmarks: ``python -m benchmarks`` runs every module in :data:`benchmarks.__main__.MODULES`.

Each module exposes ``main(repeats: int = 3, threads: int = 1)`` and prints ratios measured side by
side in one run (minimum over repeats), never absolute claims: the machines are shared.
"""

import os as _os

# One BLAS thread for numpy/scipy too (the reference likelihood's RK45 does its stage sums with numpy dot
# products on the flattened state): every side of a comparison gets one core unless --threads says otherwise.
# Must be set before numpy is first imported, which is why it lives here.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
