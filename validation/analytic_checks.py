"""Checks of group analytic_checks (being written for issue #8)."""
