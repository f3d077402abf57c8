"""Optimisation: problem files, the exact bandwidth step, split/bandwidth solvers and baselines, solution tables."""
