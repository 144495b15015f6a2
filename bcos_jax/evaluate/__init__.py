"""Evaluating explanations: the localisation metric and post-hoc attribution methods."""
