"""Verdicts returned by the executor; `Reason` values are stable strings meant for metrics."""

import dataclasses
import enum


class Reason(enum.StrEnum):
    OK = "ok"
    # decided in the parent, before anything runs
    TOO_LARGE = "too_large"  # program, input or answer text over the size cap
    SYNTAX_ERROR = "syntax_error"
    NO_ENTRY_POINT = "no_entry_point"  # no top-level `def f` (or extra defs when disallowed)
    BANNED_IMPORT = "banned_import"
    BANNED_CALL = "banned_call"
    BAD_INPUT = "bad_input"  # input is not literal call arguments
    BAD_ANSWER = "bad_answer"  # answer is not a literal (deduction) / literal args
    # observed in the sandbox
    RUNTIME_ERROR = "runtime_error"  # the snippet raised (SystemExit included)
    TIMEOUT = "timeout"  # wall-clock deadline or CPU limit
    MEMORY_LIMIT = "memory_limit"
    CRASHED = "crashed"  # killed by a signal, or exited without a result
    TAMPERED = "tampered"  # wrote to its result channel itself
    # decided in the parent, from what the sandbox observed
    NOT_PLAIN_VALUE = "not_plain_value"  # not built-in types only, NaN/inf, no round trip
    OUTPUT_TOO_LARGE = "output_too_large"
    NON_DETERMINISTIC = "non_deterministic"  # two fresh runs gave different reprs
    WRONG_ANSWER = "wrong_answer"
    SANDBOX_ERROR = "sandbox_error"  # the executor itself failed; not the snippet's fault


@dataclasses.dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: Reason
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class ProposalVerdict(Verdict):
    output: str | None = None  # repr of the gold output when ok


@dataclasses.dataclass(frozen=True)
class RunResult(Verdict):
    stdout: str = ""  # first characters of what the code printed


_KINDS = {cls.__name__: cls for cls in (Verdict, ProposalVerdict, RunResult)}


def verdict_to_json(v: Verdict) -> dict:
    """A verdict as plain JSON (for sharing verdicts between processes); `verdict_from_json` inverts it."""
    return {"kind": type(v).__name__, **dataclasses.asdict(v), "reason": v.reason.value}


def verdict_from_json(d: dict) -> Verdict:
    d = dict(d)
    cls = _KINDS[d.pop("kind")]
    return cls(**(d | {"reason": Reason(d["reason"])}))
