"""The statistics of a rollout decision: exact, with no SciPy (setup.py does not install it).

* `wilson` is the Wilson score interval of a proportion (Wilson 1927), which
  keeps its coverage near 0 and 1 and for small n, where the normal
  approximation p +- z sqrt(p(1-p)/n) does not.
* `mcnemar` is the exact McNemar test of two classifiers on the same images:
  only the discordant pairs (one right, the other wrong) carry information,
  and under "equally accurate" each falls either way with probability 1/2, so
  the count is Binomial(b + c, 1/2). Exact tail sums with math.comb: no
  approximation, whatever the counts.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Sequence

# The two-sided 95% normal quantile, Phi^-1(0.975).
Z_95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
  """The Wilson score interval for successes/n; (0.0, 1.0) when n is 0."""
  if not 0 <= successes <= n:
    raise ValueError(f"{successes} successes out of {n}")
  if n == 0:
    return 0.0, 1.0
  p = successes / n
  centre = p + z * z / (2 * n)
  spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
  scale = 1 + z * z / n
  # At p = 0 (or 1) the lower (upper) bound is exactly 0 (1); rounding would
  # leave it a hair off.
  low = 0.0 if successes == 0 else (centre - spread) / scale
  high = 1.0 if successes == n else (centre + spread) / scale
  return low, high


def binomial_upper_tail(k: int, n: int) -> float:
  """P(X >= k) for X ~ Binomial(n, 1/2), exactly (as a Fraction, then rounded once)."""
  if k <= 0:
    return 1.0
  if k > n:
    return 0.0
  return float(Fraction(sum(math.comb(n, i) for i in range(k, n + 1)), 2 ** n))


@dataclasses.dataclass(frozen=True)
class McNemar:
  """The exact McNemar test of a candidate against a baseline on the same images.

  baseline_only: images the baseline got right and the candidate wrong (b).
  candidate_only: images the candidate got right and the baseline wrong (c).
  p_two_sided: P(a split at least as uneven as b:c) under "equally accurate".
  p_candidate_worse: one-sided, P(X >= b) for X ~ Binomial(b + c, 1/2): how
    likely the candidate would lose at least b of the b + c discordant pairs
    if it were as accurate as the baseline. Small: the candidate is worse.
  """
  baseline_only: int
  candidate_only: int
  p_two_sided: float
  p_candidate_worse: float

  @property
  def discordant(self) -> int:
    return self.baseline_only + self.candidate_only


def mcnemar(baseline_only: int, candidate_only: int) -> McNemar:
  """The exact test on the discordant counts b (baseline right only) and c (candidate right only)."""
  b, c = baseline_only, candidate_only
  if b < 0 or c < 0:
    raise ValueError(f"negative discordant counts {b}, {c}")
  n = b + c
  # Two-sided: twice the smaller tail, capped at 1 (the tails are symmetric
  # for p = 1/2, so this is the usual exact two-sided p-value).
  two_sided = min(1.0, 2 * binomial_upper_tail(max(b, c), n)) if n else 1.0
  return McNemar(b, c, two_sided, binomial_upper_tail(b, n) if n else 1.0)


def percentile(values: Sequence[float], q: float) -> float:
  """The nearest-rank q-th percentile (0 < q <= 100): a value that was observed, never interpolated."""
  if not values:
    raise ValueError("no values")
  ordered = sorted(values)
  rank = max(1, math.ceil(q / 100 * len(ordered)))
  return ordered[rank - 1]
