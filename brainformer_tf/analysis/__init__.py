"""Analyses of the model zoo against the papers (parameter fits, accounting)."""
