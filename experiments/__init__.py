"""Experiment machinery: the paper suite (suite.py), its claim report and figures (claims.py), and the tables and
plots shared with dsrl.py (report.py)."""
