"""Scheduling: filters, scorers and a picker, built by type name from the configured profile.

The idea follows llm-d's scheduling framework: every plugin is a small named class; a profile runs
the filters, combines the scorers' [0, 1] scores by weight and lets the picker choose.
"""
