"""The promotion rule, a pure function of the figures.

Promote unless the data show the candidate worse:
  * accuracy: the exact one-sided McNemar test on the paired answers. The
    candidate is worse when it loses significantly more of the discordant
    pairs than it wins: p_candidate_worse < --significance. Anything else
    is promoted, a tie within noise included (an identical model, b = c = 0,
    gives p = 1): the burden of proof is on showing harm, so a retrained
    model of the same quality replaces the old one.
  * latency, if --max-p99-ms is given: the candidate's p99 per request must
    not exceed it.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from serving.rollout.evaluation import Evaluation

RULE = ("promote unless the exact one-sided McNemar test shows the candidate worse "
        "(p_candidate_worse < significance) or its p99 latency exceeds max_p99_ms; "
        "a tie within noise is promoted")


@dataclasses.dataclass(frozen=True)
class Decision:
  promote: bool
  reasons: tuple[str, ...]  # the figures that decided, in words

  def to_json(self) -> dict:
    return {"promote": self.promote, "reasons": list(self.reasons), "rule": RULE}


def decide(evaluation: Evaluation, significance: float, max_p99_ms: Optional[float]) -> Decision:
  test = evaluation.test
  cand, base = evaluation.candidate, evaluation.baseline
  figures = (f"candidate v{cand.version} {cand.correct}/{cand.total} ({cand.accuracy:.1%}) vs "
             f"stable v{base.version} {base.correct}/{base.total} ({base.accuracy:.1%}); "
             f"discordant pairs: candidate wrong only {test.baseline_only}, candidate right only "
             f"{test.candidate_only}; exact McNemar p(candidate worse) = {test.p_candidate_worse:.3g}")
  refusals = []
  if test.p_candidate_worse < significance:
    refusals.append(f"the candidate is worse: {figures} < significance {significance:g}")
  if max_p99_ms is not None and cand.latency_p99_ms > max_p99_ms:
    refusals.append(f"the candidate is too slow: p99 {cand.latency_p99_ms:.1f} ms per request > "
                    f"--max-p99-ms {max_p99_ms:g} (stable: {base.latency_p99_ms:.1f} ms)")
  if refusals:
    return Decision(False, tuple(refusals))
  tie = " (a tie within noise: promoted, as the rule says)" if test.p_two_sided >= significance else ""
  return Decision(True, (f"not shown worse: {figures} >= significance {significance:g}{tie}",))
