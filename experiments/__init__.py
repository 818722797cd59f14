"""Experiment machinery, run as python -m experiments.X: the paper suite (suite.py), its claim report and figures
(claims.py), the mechanism study (mechanisms.py, reported by why.py), intervals and atomic JSON (report.py), and the
benchmarks (bench.py)."""
