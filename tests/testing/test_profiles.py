"""sdekit.testing's hypothesis profiles (:mod:`sdekit.testing._profiles`)."""

from __future__ import annotations

from hypothesis import settings

from sdekit import testing as sdt


def test_profiles_registered_in_one_place():
    sdt.register_profiles()
    assert settings.get_profile("ci").derandomize is True
    assert settings.get_profile("ci").max_examples == 30
    assert settings.get_profile("dev").derandomize is False
