"""Sandboxed, batched execution of model-written Python for AZR rewards; see docs/executor.md."""

from .pool import ExecutorPool
from .verdicts import ProposalVerdict, Reason, RunResult, Verdict

__all__ = ["ExecutorPool", "ProposalVerdict", "Reason", "RunResult", "Verdict"]
