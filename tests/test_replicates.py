"""The multi-seed harness every ablation bench prints through (`bench/replicates.py`)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from replicates import beyond_spread, cell, compare, spread  # noqa: E402


def test_spread_is_half_the_range_and_a_cell_gives_mean_spread_and_count():
    assert abs(spread([0.5, 0.7, 0.6]) - 0.1) < 1e-12
    assert spread([0.3]) == 0.0
    assert cell([0.5, 0.7, 0.6]) == "0.600 ± 0.100 (3)"
    assert cell([]) == "not run"


def test_a_direction_is_called_only_beyond_the_larger_spread_with_two_seeds_each():
    a, b = [0.60, 0.62, 0.64], [0.50, 0.55, 0.60]  # means 0.62 and 0.55, spreads 0.02 and 0.05
    assert beyond_spread(a, b)
    assert compare("J&F", "A", a, "B", b) == "J&F: A - B = +0.070 (beyond the spread: A is higher)"
    assert compare("J&F", "B", b, "A", a).endswith("(beyond the spread: A is higher)")
    close = [0.58, 0.60, 0.66]  # mean 0.613, spread 0.04 > |0.62 - 0.613|
    assert not beyond_spread(a, close)
    assert compare("J&F", "A", a, "C", close).endswith("(within the spread: no direction)")
    # one seed never calls a direction, however far apart
    assert not beyond_spread([0.9], [0.1])
    assert compare("J&F", "A", [0.9], "B", [0.1]).endswith("(one seed: no direction can be called)")
    assert compare("J&F", "A", [], "B", [0.1]) == "J&F: A vs B: not every row run"
