"""The validation gate: may a candidate go near users? A pure decision over an eval run's numbers,
and `validate`, the lifecycle controller's entry point (evaluate, store the run, decide).

Rules (docs/evaluation.md): the agreement interval's lower bound >= the task's threshold, format
compliance >= 0.99, p95 latency within its bound when set, enough examples, and, when a student
already serves, non-inferiority to it: the paired difference's lower bound >= -margin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import Config, GateConfig
from ..store.base import TraceStore

MIN_FORMAT_COMPLIANCE = 0.99
# A new student may be at most this much less agreeable than the serving one, judged on the
# lower bound of the paired difference: small enough that retraining cannot slide, large enough
# that noise on a few hundred examples does not block every retrain.
NON_INFERIORITY_MARGIN = 0.02
# Below this many holdout examples a bootstrap interval is too narrow to mean anything (all 12
# right gives [1, 1]): the gate refuses to judge.
MIN_EXAMPLES = 20


@dataclass(frozen=True, slots=True)
class Rules:
    agreement: float = 0.92
    format_compliance: float = MIN_FORMAT_COMPLIANCE
    max_p95_latency_ms: float | None = None
    margin: float = NON_INFERIORITY_MARGIN
    min_examples: int = MIN_EXAMPLES
    general_max_drop: float | None = None

    @classmethod
    def of(cls, gate: GateConfig) -> Rules:
        return cls(
            agreement=gate.agreement,
            format_compliance=gate.format_compliance,
            max_p95_latency_ms=gate.max_p95_latency_ms,
            general_max_drop=gate.general_max_drop,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "agreement": self.agreement,
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


def decide(
    rules: Rules,
    *,
    n: int,
    agreement_ci: tuple[float, float],
    format_compliance: float,
    p95_ms: float | None,
    versus_ci: tuple[float, float] | None = None,
    general: tuple[float | None, float | None] | None = None,
) -> Decision:
    """Every rule checked (not only the first failure), so a report shows all that is wrong."""
    low = agreement_ci[0]
    checks = [
        Check("examples", n >= rules.min_examples, f"n={n} (min {rules.min_examples})"),
        Check(
            "agreement",
            low >= rules.agreement,
            f"lower bound {low:.3f} {'>=' if low >= rules.agreement else '<'} {rules.agreement}",
        ),
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


@dataclass(frozen=True, slots=True)
class Validation:
    """What the lifecycle controller reads: the verdict, why, the calibrated threshold."""

    passed: bool
    reason: str
    threshold: float | None
    eval_run_id: str
    metrics: dict[str, Any] = field(default_factory=dict)


def validate(
    store: TraceStore,
    config: Config,
    task: str,
    candidate: str,
    *,
    incumbent: str | None = None,
) -> Validation:
    """Evaluate `candidate` on its dataset's holdout (against `incumbent` when one serves),
    store the eval run, and return the gate's verdict."""
    from .run import evaluate

    doc = evaluate(store, config, task, candidate, incumbent=incumbent, progress=False)
    return Validation(
        passed=bool(doc["passed"]),
        reason=str(doc["reason"]),
        threshold=doc["confidence_threshold"],
        eval_run_id=str(doc["eval"]),
        metrics={k: doc[k] for k in ("agreement", "agreement_ci", "format_compliance", "n")},
    )
