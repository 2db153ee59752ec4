"""Rows of an ablation trained with several seeds: their mean, their spread, and whether two rows
differ by more than that spread. Every ablation bench prints its table through these, so a
direction is only ever called where it exceeds what a change of seed alone moves.

The spread of a row is half the range of its values over seeds (for three seeds, the distance
from the middle of the extremes to either); two rows differ "beyond the spread" when their means
differ by more than the larger of their two spreads, and each has at least two seeds.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def spread(values: Sequence[float]) -> float:
    """Half the range of `values` (0 for one value)."""
    return (max(values) - min(values)) / 2


def cell(values: Sequence[float]) -> str:
    """'mean ± spread (n)' for a table, or 'not run' without values."""
    if not values:
        return "not run"
    return f"{statistics.mean(values):.3f} ± {spread(values):.3f} ({len(values)})"


def beyond_spread(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether the means of `a` and `b` differ by more than the larger spread (two seeds each at least)."""
    if len(a) < 2 or len(b) < 2:
        return False
    return abs(statistics.mean(a) - statistics.mean(b)) > max(spread(a), spread(b))


def compare(metric: str, name_a: str, a: Sequence[float], name_b: str, b: Sequence[float]) -> str:
    """One line: the difference of the means of two rows on `metric`, and whether it is a direction."""
    if not a or not b:
        return f"{metric}: {name_a} vs {name_b}: not every row run"
    diff = statistics.mean(a) - statistics.mean(b)
    if len(a) < 2 or len(b) < 2:
        verdict = "one seed: no direction can be called"
    elif beyond_spread(a, b):
        verdict = f"beyond the spread: {name_a if diff > 0 else name_b} is higher"
    else:
        verdict = "within the spread: no direction"
    return f"{metric}: {name_a} - {name_b} = {diff:+.3f} ({verdict})"
