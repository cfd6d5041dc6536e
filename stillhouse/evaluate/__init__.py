"""Evaluation: does a candidate agree with the teacher on held-out data, how sure is it, and may it
go near users? `run` serves the holdout (`serve`), scores it with the one agreement (`metrics`,
over stillhouse.answers), calibrates the fallback out of sample (`calibrate`), applies the gate
(`gate`: pure decisions, a leaf) and stores the eval run; `run.validate` is the lifecycle's step.
It imports engines and providers to serve, never the lifecycle: who serves is the caller's to say.
"""
