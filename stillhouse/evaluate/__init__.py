"""Evaluation: does a candidate agree with the teacher on held-out data, how sure is it, and may it
go near users? Pure functions over frozen dataclasses; torch is imported only to serve a model.
"""
