"""Experiment machinery: the paper suite (suite.py), its claim report and figures (claims.py), the tables and
plots shared with dsrl.py (report.py), and the RL-step benchmark behind train.py --bench (bench.py)."""
