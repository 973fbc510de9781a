"""azr_jax.curves: the run's per-group curves as a PNG, gaps for steps a group skipped, clear errors."""

import json

import numpy as np
from PIL import Image

from azr_jax import curves


def _write_run(path, steps=12):
    rng = np.random.default_rng(0)
    with open(path / "metrics.jsonl", "w") as f:
        f.write(json.dumps({"step": 0, "validation/cruxeval_o": 0.0, "validation/cruxeval_i": 0.5}) + "\n")
        for s in range(1, steps + 1):
            m = {"step": s}
            for t in curves.TASK_TYPES:
                m[f"{t}/propose/valid_rate"] = float(rng.uniform())
                m[f"{t}/propose/reward"] = float(rng.uniform(-1, 1))
                m[f"{t}/solve/reward"] = float(rng.uniform(-1, 1))
                if t != "induction" or s > 4:  # induction solving starts late: a gap, not zeros
                    m[f"{t}/solve/accuracy"] = float(rng.uniform())
            m["induction/propose/solve_rate"] = None  # non-finite, written as null
            f.write(json.dumps(m) + "\n")
        f.write('{"step": 13, "ded')  # a cut last line


def test_moving_average_skips_gaps():
    got = curves.moving_average(np.array([np.nan, 1.0, 3.0, np.nan, 5.0]), 2)
    np.testing.assert_allclose(got, [np.nan, 1.0, 2.0, 3.0, 5.0])
    steps, values = curves.series([{"step": 0, "a": 1.0}, {"step": 1, "a": None}, {"step": 2, "a": 2}], "a")
    assert steps.tolist() == [1, 2] and np.isnan(values[0]) and values[1] == 2.0


def test_png_of_a_run(tmp_path):
    _write_run(tmp_path)
    out = tmp_path / "curves.png"
    assert curves.main(["--workdir", str(tmp_path), "--output", str(out)]) == 0
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape[0] > 500 and image.shape[1] > 1000
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # lines, dots and text, not a blank canvas


def test_bad_workdirs_are_clear_errors(tmp_path, capsys):
    out = str(tmp_path / "x.png")
    assert curves.main(["--workdir", str(tmp_path / "missing"), "--output", out]) == 2
    assert "metrics.jsonl does not exist" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "validation/cruxeval_o": 0.1}\n')
    assert curves.main(["--workdir", str(tmp_path), "--output", out]) == 2
    assert "no training step" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, bad\n{"step": 3}\n')
    assert curves.main(["--workdir", str(tmp_path), "--output", out]) == 2
    assert "metrics.jsonl:2" in capsys.readouterr().err
