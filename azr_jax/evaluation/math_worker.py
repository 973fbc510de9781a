"""Math grading worker: a separate process so that math-verify runs in its main thread.

math-verify bounds its parse and compare steps with signal.alarm, which only works in a main thread;
the parent (math_grading.py) adds a wall-clock limit per item and kills this process past it, which
also covers C-level work (huge integer powers) that no signal can interrupt.

Protocol: after one {"ready": true} line, each input line {"gold": str, "pred": str} gets one output
line {"ok": bool, "reason": str, "extracted": str | null}.
"""

import json
import logging
import sys

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

CONFIGS = [LatexExtractionConfig(), ExprExtractionConfig()]


def _text(parsed):
    """The answer as math-verify read it: its string form when it kept one."""
    strings = [p for p in parsed if isinstance(p, str)]
    return strings[-1] if strings else str(parsed[0])


def grade(gold, pred):
    gold_parsed = parse(gold if "\\boxed" in gold or "$" in gold else f"\\boxed{{{gold}}}", CONFIGS)
    if not gold_parsed:
        return {"ok": False, "reason": "bad_gold", "extracted": None}
    pred_parsed = parse(pred, CONFIGS)
    if not pred_parsed:
        return {"ok": False, "reason": "no_answer", "extracted": None}
    ok = verify(gold_parsed, pred_parsed)
    return {"ok": bool(ok), "reason": "ok" if ok else "wrong_answer", "extracted": _text(pred_parsed)}


def main():
    logging.disable(logging.CRITICAL)  # math-verify logs every parse failure
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        item = json.loads(line)
        try:
            result = grade(item["gold"], item["pred"])
        except Exception as e:  # math-verify's own timeouts land here too
            result = {
                "ok": False,
                "reason": "grader_error",
                "extracted": None,
                "detail": f"{type(e).__name__}: {e}"[:200],
            }
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
