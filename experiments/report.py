"""
What the suites share: the mean and 95% interval over seeds, JSON written atomically, and the folder name of a run
whose settings differ from the defaults. A value in a suite's table
or figure (dsrl.markdown_table, dsrl.plot_curves) is a number or such a (mean, half-width) pair; the half-width is
nan for a single seed.
"""
import json
import os
import statistics


def mean_ci(values):
    """Mean and half-width of the 95% t-interval (n - 1 degrees of freedom)."""
    t95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}
    n = len(values)
    if any(v != v for v in values):  # a nan (e.g. a probe with no items on a tiny model) stays nan
        return float("nan"), float("nan")
    m = statistics.fmean(values)
    return m, (t95.get(n - 1, 1.96) * statistics.stdev(values) / n ** 0.5 if n > 1 else float("nan"))


def write_json(path, obj):
    """Write JSON atomically (temp file + rename): an interrupted run never leaves half a file."""
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f)
    os.replace(path + ".tmp", path)


def changed_name(values, defaults, name):
    """A folder name from the values that differ from `defaults` ("lr0.001-steps500"), or `name` when none does: two
    settings never share a folder, and the default one keeps a plain name."""
    return "-".join(f"{k}{v:g}" for k, v in sorted(values.items()) if v != defaults.get(k)) or name
