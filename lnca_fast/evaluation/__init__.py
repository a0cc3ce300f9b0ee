"""Evaluation report: trained runs vs the corrupted input and scikit-image's classical restorers."""

from .report import evaluate_runs

__all__ = ["evaluate_runs"]
