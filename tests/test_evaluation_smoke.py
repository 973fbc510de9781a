"""Smoke evaluation through the CLI: a real model (SmolLM2-135M-Instruct) on 3 problems of every
benchmark with local data, few new tokens. Checks the outputs' structure, not the model's skill."""

import json

import pytest

from azr_jax.evaluation import benchmarks as B

pytestmark = pytest.mark.e2e  # the evaluation CLI on a real model

LOCAL = [n for n, b in B.BENCHMARKS.items() if b.file or n == "humaneval"]


def test_cli_smoke_evaluation(embedded_model_dir, tmp_path, capsys):
    from azr_jax import evaluate

    out = tmp_path / "out"
    rc = evaluate.main(
        [
            "--checkpoint",
            embedded_model_dir("smollm2-135m-instruct"),
            "--benchmarks",
            ",".join(LOCAL),
            "--limit",
            "3",
            "--max_new_tokens",
            "8",
            "--batch_size",
            "1",
            "--template",
            "chat",
            "--workers",
            "2",
            "--num_devices",
            "1",
            "--output",
            str(out),
            "--workdir",
            str(tmp_path / "tb"),
        ]
    )
    assert rc == 0
    assert "compute: float32 on cpu (the default for this backend" in capsys.readouterr().out  # no slow CPU bf16
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["accuracy"]) == set(LOCAL)
    assert all(0.0 <= v <= 1.0 for v in summary["accuracy"].values())
    assert summary["num_problems"] == {n: 3 for n in LOCAL}
    assert set(summary["averages"]) == {"code_avg", "math_avg", "overall_avg"}
    assert summary["averages_from"]["math"] == list(B.PAPER_MATH)
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 3 * len(LOCAL)
    assert all(r["response"] is not None and isinstance(r["correct"], bool) for r in records)
    assert (out / "mbppplus.evalplus.jsonl").exists() and list((tmp_path / "tb").iterdir())
