"""Shared helpers for the test suite (not part of the installed package)."""
