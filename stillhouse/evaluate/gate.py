"""The validation gate: may a candidate go near users? A pure decision over an eval run's numbers
(`decide`); `evaluate.run.validate` is where it is applied. A leaf: it imports only the config.

Rules (docs/evaluation.md): enough examples; the agreement interval's lower bound (one binomial
interval, stats.binomial_interval) >= the task's threshold; better than always giving the
teacher's most common answer; no intent with enough examples clearly under the threshold (its
upper bound below it); the kept answers' agreement reached out of sample when the task falls back
on confidence; format compliance; p95 latency within its bound when set; and, when a student
already serves, non-inferiority to it: the paired difference's lower bound >= -margin. Missing
evidence fails a rule, never passes it.

The operating point (`gate.min_coverage` set, and the task falls back on confidence): a student
whose raw agreement misses the bar may still pass the agreement rule when, at its calibrated
threshold judged out of sample, it keeps at least `min_coverage` of the answers and the kept
answers' lower bound reaches `kept_agreement`; the per-intent rule then judges each intent's kept
answers against `kept_agreement`. The fallback sends the rest to the teacher, and that is the
guarantee users get.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..taskconfig import GateConfig

MIN_FORMAT_COMPLIANCE = 0.99
# A new student may be at most this much less agreeable than the serving one, judged on the
# lower bound of the paired difference: small enough that retraining cannot slide, large enough
# that noise on a few hundred examples does not block every retrain.
NON_INFERIORITY_MARGIN = 0.02
# Below this many holdout examples the gate refuses to judge at all (the binomial interval would
# already keep 20 of 20 under 0.92: this is a floor for the other rules' sake).
MIN_EXAMPLES = 20
# An intent is judged on its own when it has at least this many held-out examples.
MIN_INTENT_EXAMPLES = 10
# When at least this share of the teacher's held-out answers differ from each other under the
# `exact` metric, a failed agreement rule says they look like free text (a hint, never a rule:
# extracted ids are all distinct too, and `exact` is right for them).
FREE_TEXT_DISTINCT = 0.5


@dataclass(frozen=True, slots=True)
class Rules:
    agreement: float = 0.92
    format_compliance: float = MIN_FORMAT_COMPLIANCE
    max_p95_latency_ms: float | None = None
    margin: float = NON_INFERIORITY_MARGIN
    min_examples: int = MIN_EXAMPLES
    general_max_drop: float | None = None
    kept_agreement: float | None = None  # None: the task does not fall back on confidence
    min_intent_examples: int = MIN_INTENT_EXAMPLES
    min_coverage: float | None = None  # None: only the raw agreement passes the agreement rule

    @classmethod
    def of(cls, gate: GateConfig, fallback: str = "confidence") -> Rules:
        return cls(
            agreement=gate.agreement,
            format_compliance=gate.format_compliance,
            max_p95_latency_ms=gate.max_p95_latency_ms,
            general_max_drop=gate.general_max_drop,
            kept_agreement=gate.kept_agreement if fallback == "confidence" else None,
            min_coverage=gate.min_coverage if fallback == "confidence" else None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "agreement": self.agreement,
            "kept_agreement": self.kept_agreement,
            "min_coverage": self.min_coverage,
            "min_intent_examples": self.min_intent_examples,
            "format_compliance": self.format_compliance,
            "max_p95_latency_ms": self.max_p95_latency_ms,
            "non_inferiority_margin": self.margin,
            "min_examples": self.min_examples,
            "general_max_drop": self.general_max_drop,
        }


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    passed: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Decision:
    passed: bool
    reason: str
    checks: tuple[Check, ...]


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the rules beyond overall agreement read: the majority-answer baseline's agreement,
    each intent's (n, agreement upper bound), the kept answers' out-of-sample lower bound (None
    when no kept answer was judged) and the share kept there (`coverage`), each intent's kept
    answers at the calibrated threshold (n, upper bound), and, under the `exact` metric, the
    share of the teacher's answers that are distinct (`distinct_answers`)."""

    agreement: float | None = None
    majority_baseline: float | None = None
    intents: dict[str, tuple[int, float]] = field(default_factory=dict)
    kept_low: float | None = None
    coverage: float | None = None
    kept_intents: dict[str, tuple[int, float]] = field(default_factory=dict)
    distinct_answers: float | None = None

    def at_operating_point(self, rules: Rules) -> bool:
        """Whether the calibrated operating point carries the agreement rule (module doc)."""
        return (
            rules.min_coverage is not None
            and rules.kept_agreement is not None
            and self.kept_low is not None
            and self.coverage is not None
            and self.kept_low >= rules.kept_agreement
            and self.coverage >= rules.min_coverage
        )


def decide(
    rules: Rules,
    *,
    n: int,
    agreement_ci: tuple[float, float],
    format_compliance: float,
    p95_ms: float | None,
    versus_ci: tuple[float, float] | None = None,
    general: tuple[float | None, float | None] | None = None,
    evidence: Evidence | None = None,
) -> Decision:
    """Every rule checked (not only the first failure), so a report shows all that is wrong."""
    low = agreement_ci[0]
    agreement = _agreement_check(rules, low, evidence)
    checks = [
        Check("examples", n >= rules.min_examples, f"n={n} (min {rules.min_examples})"),
        agreement,
    ]
    if evidence is not None:
        by_point = agreement.passed and low < rules.agreement
        checks.extend(_evidence_checks(rules, evidence, by_point))
    checks += [
        Check(
            "format",
            format_compliance >= rules.format_compliance,
            f"compliance {format_compliance:.3f} (min {rules.format_compliance})",
        ),
    ]
    if rules.max_p95_latency_ms is not None:
        ok = p95_ms is not None and p95_ms <= rules.max_p95_latency_ms
        shown = "unknown" if p95_ms is None else f"{p95_ms:.0f} ms"
        checks.append(Check("latency", ok, f"p95 {shown} (max {rules.max_p95_latency_ms:.0f} ms)"))
    if versus_ci is not None:
        d = versus_ci[0]
        checks.append(
            Check(
                "non_inferiority",
                d >= -rules.margin,
                f"vs serving student: difference lower bound {d:+.3f} (margin -{rules.margin})",
            )
        )
    if rules.general_max_drop is not None:
        # the forgetting guard: general agreement may not fall more than the allowed drop below
        # the baseline's (the serving student, else the base model)
        mine, base = general or (None, None)
        if mine is None or base is None:
            ok, detail = False, "general holdout: no agreement and baseline to compare"
        else:
            ok = mine >= base - rules.general_max_drop
            drop = rules.general_max_drop
            detail = f"general agreement {mine:.3f} vs baseline {base:.3f} (max drop {drop})"
        checks.append(Check("general", ok, detail))
    failed = [c for c in checks if not c.passed]
    reason = "; ".join(c.detail for c in (failed or checks))
    return Decision(not failed, reason, tuple(checks))


def _agreement_check(rules: Rules, low: float, e: Evidence | None) -> Check:
    """The raw agreement's lower bound against the bar, or else the operating point; a failure
    on answers that look like free text under `exact` says so."""
    check = _agreement(rules, low, e)
    distinct = e.distinct_answers if e is not None else None
    if check.passed or distinct is None or distinct < FREE_TEXT_DISTINCT:
        return check
    hint = (
        f" ({distinct:.0%} of the teacher's answers differ from each other, as free text does: "
        '`exact` compares them word for word; gate.metric = "similarity" or "judge" compares '
        "what they say)"
    )
    return Check(check.name, False, check.detail + hint)


def _agreement(rules: Rules, low: float, e: Evidence | None) -> Check:
    raw = f"lower bound {low:.3f} {'>=' if low >= rules.agreement else '<'} {rules.agreement}"
    if low >= rules.agreement or rules.min_coverage is None:
        return Check("agreement", low >= rules.agreement, raw)
    ok = e is not None and e.at_operating_point(rules)
    cov = "unknown" if e is None or e.coverage is None else f"{e.coverage:.3f}"
    point = (
        f"at the calibrated threshold out of sample: coverage {cov} "
        f"{'>=' if ok else 'vs'} {rules.min_coverage}, kept lower bound "
        f"{'unknown' if e is None or e.kept_low is None else f'{e.kept_low:.3f}'} vs "
        f"{rules.kept_agreement}"
    )
    return Check("agreement", ok, f"{raw}; {point}")


def _evidence_checks(rules: Rules, e: Evidence, by_point: bool = False) -> list[Check]:
    """The rules with teeth: beat the constant answer, no intent left behind (its kept answers,
    when the operating point carried the agreement rule), kept answers proven."""
    checks = []
    if e.majority_baseline is not None:
        mine, base = e.agreement, e.majority_baseline
        # a student may equal a baseline of 1.0: the teacher always gives one answer
        ok = mine is not None and (mine > base or mine == 1.0)
        shown = "unknown" if mine is None else f"{mine:.3f}"
        checks.append(
            Check(
                "majority_baseline",
                ok,
                f"agreement {shown} {'>' if ok else '<='} {base:.3f}, the teacher's most common "
                "answer given to every example",
            )
        )
    # at the operating point each intent's kept answers answer for it, against the kept bar
    kept_bar = rules.kept_agreement if by_point else None
    kept = kept_bar is not None
    intents = e.kept_intents if kept else e.intents
    bar = kept_bar if kept_bar is not None else rules.agreement
    judged = {k: v for k, v in intents.items() if v[0] >= rules.min_intent_examples}
    under = sorted(k for k, (_, high) in judged.items() if high < bar)
    what = "kept answers of intents" if kept else "intents"
    if under:
        worst = ", ".join(f"{k} (upper bound {judged[k][1]:.3f}, n={judged[k][0]})" for k in under)
        detail = f"{what} clearly under {bar}: {worst}"
    else:
        detail = (
            f"{len(judged)} {what} with >= {rules.min_intent_examples} examples, none clearly "
            f"under {bar}"
        )
    checks.append(Check("per_intent", not under, detail))
    if rules.kept_agreement is not None:
        target = rules.kept_agreement
        if e.kept_low is None:
            checks.append(Check("kept_agreement", False, "no kept answers judged out of sample"))
        else:
            ok = e.kept_low >= target
            checks.append(
                Check(
                    "kept_agreement",
                    ok,
                    f"kept answers' lower bound out of sample {e.kept_low:.3f} "
                    f"{'>=' if ok else '<'} {target}",
                )
            )
    return checks
