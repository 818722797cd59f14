"""Right answers written differently from the worked solutions (loops, one-hot sums, float64, per-sign clipping, a
product form of pass@k): each must pass every exercise (tests/test_tutorial.py)."""
