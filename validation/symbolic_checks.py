"""Checks of group symbolic_checks (being written for issue #8)."""
