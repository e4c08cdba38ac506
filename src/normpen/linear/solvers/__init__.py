"""Solvers of penalized linear models, one per file, each declaring what it needs from a penalty."""
