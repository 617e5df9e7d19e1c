"""Checks of group fokker_planck_checks (being written for issue #8)."""
