"""MetricsWriter: JSONL and TensorBoard records, NaN as null, truncation on resume, progress line."""

import glob
import json
import math
import os
import struct
import sys

from tensorboardX.proto import event_pb2

from azr_jax.metrics import MetricsWriter


def read_events(workdir):
    """Every Event in the TensorBoard files, parsed from the TFRecord framing:
    u64 length, u32 crc of it, the Event bytes, u32 crc of those."""
    events = []
    for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[pos + 12 : pos + 12 + length])
            events.append(event)
            pos += 12 + length + 4
    return events


def scalars_in(events):
    return {(e.step, v.tag): v.simple_value for e in events for v in e.summary.value if v.HasField("simple_value")}


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_scalars_and_texts_land_in_jsonl_and_tensorboard(tmp_path):
    w = MetricsWriter(str(tmp_path), total_steps=10)
    w.write_scalars(1, {"deduction/solve/accuracy": 0.5, "loss": float("nan"), "grad_norm": float("inf")})
    w.write_scalars(2, {"deduction/solve/accuracy": 0.75, "loss": 1.25, "grad_norm": 3})
    w.write_texts(2, {"deduction/proposal": "def f(a):\n  return a * 2"})
    w.close()

    assert read_jsonl(tmp_path / "metrics.jsonl") == [
        {"step": 1, "deduction/solve/accuracy": 0.5, "loss": None, "grad_norm": None},
        {"step": 2, "deduction/solve/accuracy": 0.75, "loss": 1.25, "grad_norm": 3.0},
    ]
    assert read_jsonl(tmp_path / "samples.jsonl") == [{"step": 2, "deduction/proposal": "def f(a):\n  return a * 2"}]

    events = read_events(tmp_path)
    scalars = scalars_in(events)
    assert scalars[(1, "deduction/solve/accuracy")] == 0.5 and scalars[(2, "loss")] == 1.25
    assert math.isnan(scalars[(1, "loss")]) and math.isinf(scalars[(1, "grad_norm")])
    texts = [
        v.tensor.string_val[0].decode()
        for e in events
        for v in e.summary.value
        if v.tag.startswith("deduction/proposal")
    ]
    assert texts == ["    def f(a):\n      return a * 2"]  # indented: shown verbatim, not as Markdown
    assert "tensorflow" not in sys.modules


def test_without_tensorboard_only_jsonl(tmp_path):
    w = MetricsWriter(str(tmp_path), total_steps=3, enable_tensorboard=False)
    w.write_scalars(1, {"loss": 2.0})
    w.close()
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 2.0}]
    assert not os.path.exists(tmp_path / "tensorboard")


def test_resume_drops_steps_from_the_resumed_one(tmp_path):
    w = MetricsWriter(str(tmp_path), total_steps=10)
    for step in range(1, 6):
        w.write_scalars(step, {"loss": float(step)})
        w.write_texts(step, {"sample": f"text {step}"})
    w.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # the crash cut the last line

    w = MetricsWriter(str(tmp_path), total_steps=10)
    w.truncate_after(3)  # the last checkpoint was saved after step 3
    w.write_scalars(4, {"loss": 40.0})
    w.close()

    assert [r["step"] for r in read_jsonl(tmp_path / "samples.jsonl")] == [1, 2, 3]
    assert read_jsonl(tmp_path / "metrics.jsonl") == [
        {"step": 1, "loss": 1.0},
        {"step": 2, "loss": 2.0},
        {"step": 3, "loss": 3.0},
        {"step": 4, "loss": 40.0},
    ]
    # TensorBoard keeps both files; the second starts with a purge marker that hides old steps >= 4.
    events = read_events(tmp_path)
    assert any(
        e.HasField("session_log") and e.session_log.status == e.session_log.START and e.step == 4 for e in events
    )


def test_fresh_start_in_a_used_workdir_moves_the_old_records_aside(tmp_path):
    w = MetricsWriter(str(tmp_path), total_steps=2)
    for step in (1, 2):
        w.write_scalars(step, {"loss": float(step)})
        w.write_texts(step, {"sample": f"old {step}"})
    w.close()

    w = MetricsWriter(str(tmp_path), total_steps=2)
    archive = w.start_fresh()  # no checkpoint: step 1 comes again, from a new run
    w.write_scalars(1, {"loss": 10.0})
    w.close()

    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 10.0}]
    assert read_jsonl(tmp_path / "samples.jsonl") == []
    assert os.path.dirname(archive) == str(tmp_path / "previous_runs")
    assert [r["loss"] for r in read_jsonl(os.path.join(archive, "metrics.jsonl"))] == [1.0, 2.0]
    assert [r["sample"] for r in read_jsonl(os.path.join(archive, "samples.jsonl"))] == ["old 1", "old 2"]
    events = read_events(tmp_path)  # the new events file starts by hiding every earlier step
    assert any(
        e.HasField("session_log") and e.session_log.status == e.session_log.START and e.step == 0 for e in events
    )

    w = MetricsWriter(str(tmp_path / "new"), total_steps=2)
    assert w.start_fresh() is None  # nothing to move
    w.close()
    assert not os.path.exists(tmp_path / "new" / "previous_runs")


def test_progress_line_has_eta_from_moving_average(tmp_path):
    w = MetricsWriter(str(tmp_path), total_steps=10, enable_tensorboard=False)
    w.progress_line(1, 100.0, {})  # the first step also compiles
    line = w.progress_line(2, 20.0, {"optimizer/loss": 1.5, "deduction/solve/accuracy": 0.4213, "other": 3.0})
    assert line == "step 2/10 | 60.0s/step | ETA 8m00s | deduction acc 0.421 | loss 1.5"
    for step in range(3, 13):
        line = w.progress_line(step, 20.0, {})
    assert line.startswith("step 12/10 | 20.0s/step | ETA 0s")  # the compile step left the window
    long_run = MetricsWriter(str(tmp_path), total_steps=500, enable_tensorboard=False)
    assert long_run.progress_line(1, 30.0, {}) == "step 1/500 | 30.0s/step | ETA 4h09m"


def test_group_table_shows_all_six_groups_first_to_last():
    from azr_jax.metrics import group_table

    first = {"deduction/propose/count": 2.0, "deduction/propose/valid_rate": 0.0, "deduction/propose/reward": -1.0}
    last = {"deduction/propose/count": 2.0, "deduction/propose/valid_rate": 0.5, "deduction/propose/solve_rate": 0.25}
    last["induction/solve/accuracy"], last["validation/cruxeval_o"] = 0.75, 0.33
    lines = group_table(first | {"validation/cruxeval_o": 0.0}, last).splitlines()
    assert lines[0].split() == ["group", "count", "valid", "/", "acc", "solve", "rate", "reward"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert len(rows) == 7  # six groups and the validation score
    assert rows["deduction/propose"].split() == [
        "deduction/propose",
        "2",
        "->",
        "2",
        "0.00",
        "->",
        "0.50",
        "-",
        "->",
        "0.25",
        "-1.00",
        "->",
        "-",
    ]
    assert "- -> 0.75" in rows["induction/solve"] and "0.00 -> 0.33" in rows["validation/cruxeval_o"]


def test_proposals_are_recorded_truncated_on_resume_and_capped(tmp_path):
    logs = []
    record = {"task_type": "deduction", "valid": True, "program": "def f(a):\n    return a" + " " * 200}
    w = MetricsWriter(str(tmp_path), total_steps=10, proposals_max_mb=2 / 1024, log=logs.append)  # a 2 KB cap
    for step in (1, 2, 3):
        w.write_proposals(step, [{"step": step, **record}, {"step": step, **record}])
    w.close()
    assert [r["step"] for r in read_jsonl(tmp_path / "proposals.jsonl")] == [1, 1, 2, 2, 3, 3]

    w = MetricsWriter(str(tmp_path), total_steps=10, proposals_max_mb=2 / 1024, log=logs.append)
    w.truncate_after(2)  # resumed from the step-2 checkpoint: step 3 is done again
    for step in (3, 4, 5):
        w.write_proposals(step, [{"step": step, **record}, {"step": step, **record}])
    w.close()
    steps = [r["step"] for r in read_jsonl(tmp_path / "proposals.jsonl")]
    assert steps == [1, 1, 2, 2, 3, 3]  # step 4 would pass 2 KB: not written, and nothing after it either
    assert os.path.getsize(tmp_path / "proposals.jsonl") <= 2048
    assert len(logs) == 1 and "proposal_log_max_mb" in logs[0] and "step 4" in logs[0]


def test_no_proposal_log_when_the_cap_is_zero(tmp_path):
    w = MetricsWriter(str(tmp_path), total_steps=10, proposals_max_mb=0)
    w.write_proposals(1, [{"step": 1, "task_type": "deduction", "valid": False}])
    w.close()
    assert not os.path.exists(tmp_path / "proposals.jsonl")


def test_group_table_of_a_single_step_has_one_value_per_cell():
    from azr_jax.metrics import group_table

    last = {"abduction/solve/count": 2.0, "abduction/solve/accuracy": 0.5, "validation/cruxeval_i": 0.25}
    rows = {line.split()[0]: line.split() for line in group_table(None, last).splitlines()[2:]}
    assert rows["abduction/solve"] == ["abduction/solve", "2", "0.50", "-", "-"]
    assert rows["validation/cruxeval_i"] == ["validation/cruxeval_i", "0.25"] and "->" not in str(rows)
