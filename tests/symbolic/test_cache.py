"""The on-disk cache of symbolic derivations (sdekit/symbolic/_cache.py)."""

from __future__ import annotations

import pickle

import pytest
import sympy as sp

import sdekit
from sdekit.symbolic import _cache, derive
from sdekit.symbolic import sde as sde_module


def _fresh(drift: str = "-theta*x", diffusion: str = "sigma*exp(t/2)", **params):
    """A new SDE class (its own in-process cache entry), so every derivation here starts cold in memory."""
    params = params or {"theta": 0.7, "sigma": 0.4}
    return sdekit.SDE.from_expressions(drift, diffusion, **params)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.delenv("SDEKIT_NO_CACHE", raising=False)
    monkeypatch.setenv("SDEKIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _forget(sde) -> None:
    sde_module._SYMBOLIC_CACHE[sde._cache_key].pop("marginal", None)


def _exprs(sde):
    m = sde._marginal_exprs()
    return m.alpha, m.offset, m.sigma2, m.closed


def test_second_derivation_is_read_from_disk(cache, monkeypatch):
    sde = _fresh()
    first = _exprs(sde)
    entries = list(cache.glob("marginal-*.pkl"))
    assert len(entries) == 1
    _forget(sde)

    def fail(*args, **kwargs):
        raise AssertionError("derive_marginal ran although the result was cached on disk")

    monkeypatch.setattr(derive, "derive_marginal", fail)
    second = _exprs(sde)
    assert second[3] == first[3] is True
    for a, b in zip(first[:3], second[:3], strict=True):
        assert sp.simplify(a - b) == 0


def test_key_depends_on_the_equations_and_parameter_assumptions(cache):
    _exprs(_fresh())
    _exprs(_fresh(diffusion="sigma*exp(t/3)"))  # other equation
    _exprs(_fresh(theta=-0.7, sigma=0.4))  # same text, a negative theta: other assumptions, other marginal
    assert len(list(cache.glob("marginal-*.pkl"))) == 3


def test_corrupt_entry_is_recomputed_and_rewritten(cache):
    sde = _fresh()
    truth = _exprs(sde)
    (entry,) = cache.glob("marginal-*.pkl")
    entry.write_bytes(b"not a pickle")
    _forget(sde)
    again = _exprs(sde)
    assert sp.simplify(again[2] - truth[2]) == 0
    assert pickle.loads(entry.read_bytes()).closed is True  # rewritten with a valid entry


def test_entry_of_the_wrong_type_is_recomputed(cache):
    """A valid pickle that is not a derivation (e.g. written by another tool) is ignored and rewritten."""
    sde = _fresh()
    truth = _exprs(sde)
    (entry,) = cache.glob("marginal-*.pkl")
    entry.write_bytes(pickle.dumps({"not": "a derivation"}))
    _forget(sde)
    again = _exprs(sde)
    assert sp.simplify(again[2] - truth[2]) == 0
    assert isinstance(pickle.loads(entry.read_bytes()), derive.MarginalExprs)


def test_no_cache_and_unwritable_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("SDEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SDEKIT_NO_CACHE", "1")
    assert _cache.cache_dir() is None
    assert _exprs(_fresh())[3] is True
    assert not (tmp_path / "cache").exists()
    # a cache "directory" that is a file cannot be written: derivation still works
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.delenv("SDEKIT_NO_CACHE")
    monkeypatch.setenv("SDEKIT_CACHE_DIR", str(blocker))
    assert _exprs(_fresh())[3] is True


def test_default_location_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("SDEKIT_NO_CACHE", raising=False)
    monkeypatch.delenv("SDEKIT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _cache.cache_dir() == tmp_path / "sdekit"
    monkeypatch.setenv("SDEKIT_NO_CACHE", "0")  # "0" means: keep the cache on
    assert _cache.cache_dir() == tmp_path / "sdekit"
