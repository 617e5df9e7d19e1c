"""sdekit benchmarks: ``python -m benchmarks`` runs every module in :data:`benchmarks.__main__.MODULES`.

Each module exposes ``main(repeats: int = 3, threads: int = 1)`` and prints ratios measured side by
side in one run (minimum over repeats), never absolute claims: the machines are shared.
"""
