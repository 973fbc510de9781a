"""azr_jax.report: the page of a real tiny run and of a synthetic one, opened in headless Chromium; the
TensorBoard projector files; the embedding; bad input on the command line.

The browser tests need Debian's chromium (`bash launch/setup.sh --test` installs it) and fail without it.
"""

import json
import os
import random
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from azr_jax import proposal_log, report
from azr_jax.records import METRICS_FILE, PROPOSALS_FILE, read_jsonl

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOSTILE = "</script><script>alert(1)</script>"
HOSTILE_PROGRAM = f'def f(x):\n    """{HOSTILE} <!-- -->"""\n    return x + "é漢字🙂\'&amp;"  # </SCRIPT>'
TYPES = ("deduction", "abduction", "induction")
STATEMENTS = [
    "y = [v % {k} for v in x]",
    "y = sorted(x, key=lambda v: (v % {k}, -v))",
    "d = {{}}\n    for v in x:\n        d[v % {k}] = d.get(v % {k}, 0) + 1",
    "s = 0\n    for i, v in enumerate(x):\n        s += v * i",
    "t = ''.join(str(v) * {k} for v in x)",
    "while len(x) > {k}:\n        x = x[1:]",
    "z = {{v: i for i, v in enumerate(x) if v > {k}}}",
    "m = max(x) if x else {k}",
]
RETURNS = ["x", "len(x) + {k}", "x[::-1]", "sum(x) % {k}", "[v * {k} for v in x]", "str(x)[{k}:]"]


def program(rng) -> str:
    body = [rng.choice(STATEMENTS) for _ in range(rng.randint(0, 3))] + ["return " + rng.choice(RETURNS)]
    return "def f(x):\n" + "\n".join("    " + line.format(k=rng.randint(2, 9)) for line in body)


def write_run(workdir, n=300, seed=0) -> list[dict]:
    """A synthetic workdir: n proposal records over 10 steps (one valid proposal and one rejected response
    carry HOSTILE text), metrics.jsonl with a gap, config.json. Returns the records."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        step, task_type, valid = 1 + i * 10 // n, TYPES[i % 3], i % 4 != 3
        rec = {
            "step": step,
            "task_type": task_type,
            "valid": valid,
            "well_formatted": valid,
            "reason": (
                "ok"
                if valid
                else "syntax_error" if i == 3 else rng.choice(["format", "runtime_error", "banned_import"])
            ),
            "truncated": not valid and i % 8 == 7,
            "reward": -1.0,
            "solve_rate": None,
            "response_tokens": rng.randint(10, 500),
        }
        if not valid:
            rec["text"] = f"<answer>{HOSTILE}</answer> <!-- «response» {i}" if i == 3 else f"bad response {i}"
        else:
            s = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0])
            k = 10 if task_type == "induction" else 1
            rec.update(
                reward=1 - s if 0 < s < 1 else 0.0,
                solve_rate=s,
                program=HOSTILE_PROGRAM if i == 5 else program(rng),
                inputs=[f"[{i}, 2]"] * k,
                outputs=[f"'{HOSTILE}'" if i == 5 else str(i)] * k,
                message=f"a message <!-- {HOSTILE}" if task_type == "induction" else "",
                ast_size=rng.randint(5, 60),
                learnability=[[str(i), j < 4 * s] for j in range(4)],
                solver=[[f"'{HOSTILE}'" if i == 5 else str(i), 1.0]],
            )
        records.append(rec)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, PROPOSALS_FILE), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    metrics = [{"step": 0, "validation/cruxeval_o": 0.2, "validation/cruxeval_i": 0.1}]
    for step in range(1, 11):
        m = {"step": step}
        for t in TYPES:
            for role, rate in (("propose", "valid_rate"), ("solve", "accuracy")):
                g = f"{t}/{role}"
                m.update({f"{g}/count": 4.0, f"{g}/reward": rng.uniform(-1, 1), f"{g}/{rate}": rng.random()})
                m[f"{g}/response_length_mean"] = rng.uniform(10, 500)
            m[f"{t}/propose/solve_rate"] = rng.random()
        if step == 3:
            m["deduction/propose/reward"] = None  # non-finite: a gap
        if step == 4:
            m["induction/solve/count"] = 0.0  # an empty group logs zeros: a gap too
        metrics.append(m)
    with open(os.path.join(workdir, METRICS_FILE), "w") as f:
        f.writelines(json.dumps(m) + "\n" for m in metrics)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump({"model": {"checkpoint": "/models/qwen"}, "template": "azr", "answer_format": "think_answer"}, f)
    return records


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """(workdir, records, summary) of a synthetic run's report."""
    workdir = str(tmp_path_factory.mktemp("synthetic") / "run")
    records = write_run(workdir)
    return workdir, records, report.build(workdir, log=lambda s: None)


# ---- the browser


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run `bash launch/setup.sh --test` (it installs Debian's chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: run `bash launch/setup.sh --test`")
    pw = sync_playwright().start()
    b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield b
    b.close()
    pw.stop()


class Page:
    """A page of the report, recording console errors, page errors, dialogs and any request but the file's."""

    def __init__(self, browser, path):
        self.url = "file://" + os.path.abspath(path)
        self.problems = []
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("request", lambda r: r.url in (self.url, "data:,") or self.problems.append(f"request {r.url}"))
        self.page.on("dialog", self._dialog)
        self.page.goto(self.url)
        self.page.wait_for_selector("body[data-ready]")

    def _dialog(self, dialog):
        self.problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    def attr(self, selector, name):
        return self.page.get_attribute(selector, name)

    def close(self):
        self.page.close()
        assert self.problems == []


def png_pixels(png: bytes) -> np.ndarray:
    """[height, width, channels] of an 8-bit RGB or RGBA PNG, decoded with zlib and the five row filters."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(png):
        size, kind = struct.unpack(">I4s", png[pos : pos + 8])
        data = png[pos + 8 : pos + 8 + size]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", data[:10])
        elif kind == b"IDAT":
            idat += data
        pos += 12 + size
    assert depth == 8 and color in (2, 6), (depth, color)
    bpp = 3 if color == 2 else 4
    stride, raw = width * bpp, zlib.decompress(idat)
    prev, rows = bytearray(stride), []
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride) if kind else ():
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return np.frombuffer(b"".join(rows), np.uint8).reshape(height, width, bpp)


def test_png_decoder_reads_every_filter():
    pixels = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8).astype(int)
    raw = b""
    for f, row in enumerate(pixels):  # row f written with filter f, as an encoder does it
        x = row.reshape(-1)
        b = pixels[f - 1].reshape(-1) if f else np.zeros_like(x)
        a, c = (np.concatenate([[0, 0, 0], v[:-3]]) for v in (x, b))
        pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        raw += bytes([f]) + bytes(((x - [0, a, b, (a + b) // 2, paeth][f]) % 256).astype(np.uint8))
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + b"\0" * 4  # noqa: E731
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 5, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    assert np.array_equal(png_pixels(png), pixels)


@pytest.mark.e2e  # the page in headless Chromium
def test_the_page_of_a_synthetic_run_in_chromium(synthetic, browser):
    workdir, records, summary = synthetic
    valid = [r for r in records if r["valid"]]
    assert summary["valid"] == len(valid) and summary["proposals"] == len(records)
    page = Page(browser, summary["output"])
    p = page.page
    assert page.attr("#map", "data-points") == str(len(valid)) == page.attr("#map", "data-visible")
    assert p.locator("#map circle").count() == len(valid)
    assert "/models/qwen" in p.inner_text("#header") and str(len(records)) in p.inner_text("#header")

    # a real mouse over a point shows the program of the point on top there
    p.locator("#map").scroll_into_view_if_needed()
    box = p.locator("#map circle").nth(17).bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    p.mouse.move(x, y)
    i = int(p.evaluate(f"document.elementFromPoint({x}, {y}).dataset.i"))
    assert p.inner_text("#panel pre.program") == valid[i]["program"]
    p.mouse.click(x, y)
    assert p.locator("#map circle.selected").get_attribute("data-i") == str(i)

    # the hostile program, its output, solver answer and message are text, and no script ran
    hostile = next(k for k, r in enumerate(valid) if r["program"] == HOSTILE_PROGRAM)
    p.locator(f'#map circle[data-i="{hostile}"]').dispatch_event("click")
    assert p.locator("#panel pre.program").text_content() == HOSTILE_PROGRAM
    assert HOSTILE in p.locator("#panel pre.io").text_content()
    assert HOSTILE in p.locator("#panel table.solver").text_content()
    assert p.evaluate("document.scripts.length") == 2
    induction = next(k for k, r in enumerate(valid) if r["task_type"] == "induction")
    p.locator(f'#map circle[data-i="{induction}"]').dispatch_event("mouseover")
    assert p.locator("#panel pre.message").text_content() == valid[induction]["message"]
    assert p.locator("#panel pre.io").text_content().count("→") == 10

    # a rejected response with the hostile text, from the reasons table
    reasons = p.locator("#reason-table")
    assert "format" in reasons.inner_text() and "banned_import" in reasons.inner_text()
    reasons.locator("tr", has_text="syntax_error").locator("td.clickable").click()
    assert p.locator("#panel pre.example").text_content() == records[3]["text"]

    # the step filter hides points outside its range
    p.fill("#step-min", "6")
    shown = sum(r["step"] >= 6 for r in valid)
    assert page.attr("#map", "data-visible") == str(shown) and 0 < shown < len(valid)
    assert p.locator('#map circle[style*="display: none"]').count() == len(valid) - shown
    p.fill("#step-max", "7")
    assert page.attr("#map", "data-visible") == str(sum(6 <= r["step"] <= 7 for r in valid))

    # colouring by task type gives three colours; a table row shows its task
    p.select_option("#color-by", "type")
    assert len(set(p.eval_on_selector_all("#map circle", "cs => cs.map(c => c.getAttribute('fill'))"))) == 3
    rows = p.locator("#learnability table.tasks").first.locator("tr.clickable")
    assert rows.count() == min(report.TABLE_ROWS, sum(0 < r["solve_rate"] < 1 for r in valid))
    rows.nth(2).click()
    assert p.inner_text("#panel pre.program") == valid[int(rows.nth(2).get_attribute("data-i"))]["program"]

    # the curves: a gap where a value is null or the group was empty
    assert p.locator("#curves figure").count() == 5  # four group charts and validation
    assert p.locator("#trends figure").count() == 4
    paths = p.eval_on_selector_all("#curves figure:first-child path", "ps => ps.map(p => p.getAttribute('d'))")
    assert paths[0].count("M") == 2  # deduction/propose reward: null at step 3

    p.fill("#step-min", "")
    p.fill("#step-max", "")
    assert page.attr("#map", "data-visible") == str(len(valid))
    for selector in ("#map", "#curves"):  # drawn: many colours, and the background not nearly everywhere
        pixels = png_pixels(p.locator(selector).screenshot())
        _, counts = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0, return_counts=True)
        assert len(counts) > 20 and counts.max() < 0.98 * counts.sum(), selector
    page.close()


def test_the_data_cannot_break_out_of_its_script_element(synthetic):
    _, _, summary = synthetic
    with open(summary["output"], encoding="utf-8") as f:
        html = f.read()
    assert html.count("</script>") == 2 and html.lower().count("</script") == 2 and html.count("<!--") == 1
    blob = html.split('<script type="application/json" id="report-data">')[1].split("</script>")[0]
    assert blob.isascii() and "<" not in blob and ">" not in blob and "&" not in blob
    data = json.loads(blob)
    assert HOSTILE_PROGRAM in data["texts"]


def test_curves_leave_gaps_and_the_page_is_deterministic(synthetic, tmp_path):
    workdir, records, summary = synthetic
    charts = report.curves(read_jsonl(os.path.join(workdir, METRICS_FILE)))
    steps, reward = charts["steps"], {s["name"]: s["values"] for s in charts["charts"][0]["series"]}
    assert steps == list(range(11)) and reward["deduction/propose"][0] is None  # step 0: validation only
    assert reward["deduction/propose"][3] is None and reward["induction/solve"][4] is None
    assert all(v is not None for v in reward["abduction/solve"][1:])
    again = report.build(workdir, str(tmp_path / "again.html"), tensorboard=False, log=lambda s: None)
    with open(summary["output"]) as a, open(again["output"]) as b:
        assert a.read() == b.read()


def test_the_projector_files_are_consistent_and_rewritten_in_place(synthetic):
    workdir, records, summary = synthetic
    tensorboard = os.path.join(workdir, "tensorboard")
    report.build(workdir, log=lambda s: None)  # a second report of the same step replaces the first's entry
    with open(os.path.join(tensorboard, "projector_config.pbtxt")) as f:
        config = f.read()
    assert config.count("embeddings {") == 1 and 'tensor_name: "proposals:00010"' in config
    paths = dict(line.split(": ", 1) for line in config.splitlines() if line.endswith('.tsv"'))
    tensors, metadata = (os.path.join(tensorboard, json.loads(paths[k])) for k in ("tensor_path", "metadata_path"))
    with open(tensors) as f:
        rows = [line.split("\t") for line in f.read().splitlines()]
    with open(metadata, encoding="utf-8") as f:
        labels = [line.split("\t") for line in f.read().splitlines()]
    valid = [r for r in records if r["valid"]]
    assert len(rows) == len(valid) == summary["valid"] and {len(r) for r in rows} == {report.PROJECTOR_DIMS}
    assert labels[0] == ["step", "task_type", "solve_rate", "reward", "program"] and len(labels) == len(valid) + 1
    assert {len(r) for r in labels} == {5}
    assert [int(r[0]) for r in labels[1:]] == [r["step"] for r in valid]
    assert labels[1][4].startswith("def f(x): ⏎ ")


def test_embedding_is_normalised_and_similar_programs_are_near():
    programs = [
        "def f(x):\n    return x * 2 + 1",
        "def f(x):\n    return x * 3 + 1",
        "def f(s):\n    d = {}\n    for c in s:\n        d[c] = d.get(c, 0) + 1\n    return d",
        "def f(s):\n    d = {}\n    for ch in s:\n        d[ch] = d.get(ch, 0) + 2\n    return d",
        "def f(x:\n    return (",  # broken: its tokens before the error still count
    ]
    x = report.embed(programs)
    dense = x.dense(0, x.rows)
    assert np.allclose(np.linalg.norm(dense, axis=1), 1.0, atol=1e-5)
    sim = dense @ dense.T
    assert sim[0, 1] > sim[0, 2] and sim[2, 3] > sim[1, 3]
    scores = report.pca(x, 3)
    assert scores.shape == (5, 3) and np.array_equal(scores, report.pca(report.embed(programs), 3))
    centred = dense - dense.mean(0)
    top = np.linalg.svd(centred, full_matrices=False)[1][:3]
    assert np.allclose(np.linalg.norm(scores, axis=0), top, rtol=1e-3)  # the randomised SVD finds the top ones


def test_trends_count_distinct_programs_and_mean_pairwise_distance():
    programs = ["def f(x):\n    return x", "def f(x):\n    return x", "def f(s):\n    return s[::-1] * 2"]
    valid = [{"step": 1, "task_type": "deduction", "program": p, "ast_size": 4 + k} for k, p in enumerate(programs)]
    valid.append({"step": 1, "task_type": "abduction", "program": programs[2], "ast_size": 9})
    proposals = valid + [{"step": 2, "task_type": "induction"}]  # a step without valid proposals
    x = report.embed([r["program"] for r in valid])
    charts = {
        c["title"]: {s["name"]: s["values"] for s in c["series"]} for c in report.trends(proposals, valid, x)["charts"]
    }
    dense = x.dense(0, 3)
    pairwise = [1 - dense[i] @ dense[j] for i in range(3) for j in range(3) if i < j]
    assert charts["Valid proposals per step"] == {"deduction": [3, 0], "abduction": [1, 0], "induction": [0, 0]}
    assert charts["Mean AST size of valid programs"]["deduction"] == [5, None]
    assert charts["Distinct programs / valid proposals"]["deduction"] == [round(2 / 3, 4), None]
    distance = charts["Mean pairwise cosine distance of program embeddings"]
    assert distance["deduction"][0] == pytest.approx(np.mean(pairwise), abs=1e-4) and distance["abduction"] == [
        None,
        None,
    ]


@pytest.mark.e2e  # train() for 2 steps, then the page in headless Chromium
def test_the_report_of_a_tiny_real_run(tmp_path, browser):
    from azr_jax.trainer import train
    from experiments.tiny import get_config

    workdir = str(tmp_path / "run")
    config = get_config()
    config.total_steps = 2  # no validation (tiny.py's default): the synthetic run has its curve
    train(config, workdir, log=lambda s: None)
    proposals = proposal_log.read(workdir)
    summary = report.build(workdir, log=lambda s: None)
    valid = sum(r["valid"] for r in proposals)
    assert summary["proposals"] == len(proposals) == 2 * 3 * config.batch_size and summary["valid"] == valid
    page = Page(browser, summary["output"])
    assert page.page.locator("#curves figure").count() == 4 and page.page.locator("#curves path").count() >= 6
    assert page.page.locator("#reason-table tr").count() >= 4
    if valid:
        assert page.attr("#map", "data-points") == str(valid)
    else:
        assert f"None of the {len(proposals)} proposals is valid" in page.page.inner_text("#map-box")
    page.close()


# ---- bad input


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "azr_jax.report", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_cli_rejects_what_is_not_a_run(tmp_path):
    for workdir, words in ((tmp_path / "nowhere", "does not exist"), (tmp_path, "not an azr_jax run")):
        r = run_cli("--workdir", str(workdir))
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    run = tmp_path / "run"
    write_run(str(run), n=20)
    r = run_cli("--workdir", str(run), "--output", str(run / "metrics.jsonl"))
    assert r.returncode == 2 and "must end in .html" in r.stderr
    assert sorted(os.listdir(run)) == ["config.json", "metrics.jsonl", "proposals.jsonl"]


def test_cli_names_a_corrupt_line_and_skips_a_cut_last_one(tmp_path):
    run = tmp_path / "run"
    write_run(str(run), n=20)
    path = run / PROPOSALS_FILE
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines) + lines[0][:30])  # a crash mid-write: skipped
    r = run_cli("--workdir", str(run), "--no-tensorboard")
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(run / "tensorboard")
    path.write_text("".join(lines[:5]) + "{not json\n" + "".join(lines[5:]))
    r = run_cli("--workdir", str(run))
    assert r.returncode == 2 and f"{path}:6: not a JSON object" in r.stderr and "Traceback" not in r.stderr
    path.write_text("".join(lines))
    metrics = run / METRICS_FILE
    metrics.write_text('{"step": 1}\n[1, 2]\n{"step": 2}\n')
    r = run_cli("--workdir", str(run))
    assert r.returncode == 2 and f"{metrics}:2: not a record" in r.stderr


@pytest.mark.e2e  # the page in headless Chromium
def test_a_run_without_proposals_gets_curves_and_says_there_is_no_map(tmp_path, browser):
    run = tmp_path / "run"
    write_run(str(run), n=20)
    os.remove(run / PROPOSALS_FILE)
    r = run_cli("--workdir", str(run))
    assert r.returncode == 0 and "no map" in r.stderr
    page = Page(browser, str(run / "report.html"))
    assert "proposals.jsonl is missing" in page.page.inner_text("#notices")
    assert page.page.locator("#curves figure").count() == 5 and page.page.locator("#map").count() == 0
    page.close()


@pytest.mark.e2e  # the page in headless Chromium
def test_zero_valid_proposals_say_so(tmp_path, browser):
    run = tmp_path / "run"
    records = [r for r in write_run(str(run), n=40) if not r["valid"]]
    with open(run / PROPOSALS_FILE, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    summary = report.build(str(run), log=lambda s: None)
    assert summary["valid"] == 0 and summary["projector"] is None
    with open(summary["output"]) as f:
        data = json.loads(f.read().split('id="report-data">')[1].split("</script>")[0])
    assert data["points"] == [] and data["header"]["proposals"] == 10 and data["trends"] is None
    page = Page(browser, summary["output"])
    assert "None of the 10 proposals is valid" in page.page.inner_text("#map-box")
    page.close()
