"""Checks done in the trusted parent without running anything (docs/algorithm.md section 3, rules 1-2 and 5).

These are filters for learnability and for parsing model text as data; safety comes from the
sandbox. Model text is only ever parsed here (`ast.parse`, `ast.literal_eval`), never evaluated.
Every function returns None when the text passes, or a (Reason, detail) pair.
"""

import ast
import math
import re

from .verdicts import Reason

BANNED_IMPORTS = frozenset(
    "random time datetime calendar os sys subprocess multiprocessing threading logging hashlib "
    "hmac secrets socket pathlib shutil signal ctypes pickle".split()
)
BANNED_CALLS = frozenset("open input exec eval compile __import__ globals breakpoint exit quit".split())
# An ASCII program none of whose words is `import` or a banned call cannot break rule 2: its AST
# walk, the parent's largest per-validation cost, is skipped. (Non-ASCII identifiers are NFKC-
# normalised by the parser, so `ｏｐｅｎ` is `open`: those programs are always walked.)
_RULE_2_WORDS = re.compile(r"\b(?:import|%s)\b" % "|".join(sorted(BANNED_CALLS)))
MAX_PROGRAM_CHARS = 20_000
MAX_LITERAL_CHARS = 20_000  # inputs, answers and outputs; bounds parse time and recursion


def check_program(program, allow_helpers=True):
    """Rules 1-2: parses, defines a top-level `f`, and imports/calls nothing banned.

    With allow_helpers=False it behaves as the reference code: `f` must be the only def.
    """
    if len(program) > MAX_PROGRAM_CHARS:
        return Reason.TOO_LARGE, f"program longer than {MAX_PROGRAM_CHARS} characters"
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        return Reason.SYNTAX_ERROR, f"{type(e).__name__}: {e}"[:300]
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if not any(isinstance(n, ast.FunctionDef) and n.name == "f" for n in defs):
        return Reason.NO_ENTRY_POINT, "no top-level function named f"
    if not allow_helpers and sum(isinstance(n, ast.FunctionDef) for n in ast.walk(tree)) > 1:
        return Reason.NO_ENTRY_POINT, "more than one function definition"
    if program.isascii() and not _RULE_2_WORDS.search(program):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            modules = []
        for module in modules:
            if module.split(".")[0] in BANNED_IMPORTS:
                return Reason.BANNED_IMPORT, f"imports {module}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in BANNED_CALLS:
            return Reason.BANNED_CALL, f"calls {node.func.id}()"
    return None


def check_input(text, reason=Reason.BAD_INPUT):
    """Inputs are Python literals written as call arguments: the text of `f(<input>)`.

    Keyword arguments with literal values are accepted; an empty argument list is not (the task
    needs an input). `reason` lets abduction answers report BAD_ANSWER instead.
    """
    if len(text) > MAX_LITERAL_CHARS:
        return Reason.TOO_LARGE, f"input longer than {MAX_LITERAL_CHARS} characters"
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return reason, "not call arguments"
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "f"):
        return reason, "not call arguments"
    if not call.args and not call.keywords:
        return reason, "empty input"
    for node in call.args + [k.value for k in call.keywords]:
        if isinstance(node, ast.Starred):
            return reason, "starred argument"
        if any(isinstance(n, ast.Constant) and n.value is Ellipsis for n in ast.walk(node)):
            return reason, "`...` is the prompt's placeholder, not an input"
        try:
            _reject_nan(ast.literal_eval(node))
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return reason, "argument is not a literal"
    if any(k.arg is None for k in call.keywords):
        return reason, "** argument"
    return None


def parse_literal(text):
    """Parse a plain value: `ast.literal_eval`, size-capped, NaN rejected. Raises ValueError."""
    if len(text) > MAX_LITERAL_CHARS:
        raise ValueError(f"longer than {MAX_LITERAL_CHARS} characters")
    try:
        return _reject_nan(ast.literal_eval(text.strip()))
    except (TypeError, SyntaxError, MemoryError, RecursionError) as e:
        raise ValueError(f"not a literal ({type(e).__name__})") from None


def _reject_nan(value):
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, float) and math.isnan(v) or isinstance(v, complex) and v != v:
            raise ValueError("NaN")
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple, set, frozenset)):
            stack.extend(v)
    return value
