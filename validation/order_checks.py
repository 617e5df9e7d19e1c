"""Checks of group order_checks (being written for issue #8)."""
