"""One self-contained HTML page about a self-play run: what the proposer invented, and how training went.

    python -m azr_jax.report --workdir W [--output W/report.html] [--no-tensorboard]

The curves come from `W/metrics.jsonl` (reward, valid rate / accuracy, learnability solve rate and
response length of the six (task type, role) groups, CRUXEval-O/I), everything else from
`W/proposals.jsonl` (`azr_jax.proposal_log`): a 2-D map of every valid proposal (its program text
embedded as hashed TF-IDF over Python tokens and AST parent>child node types, L2-normalised, then
projected with a randomised PCA; numpy only and deterministic), the most and least learnable tasks,
why proposals were rejected, and per-step program size and diversity. The page needs no network: data,
script and style are inline, and texts are cut to `PAGE_MAX_CHARS` to keep it small.

With --tensorboard (the default) the same embedding also goes to TensorBoard's projector under
`W/tensorboard` (`tensorboard --logdir W/tensorboard`, Projector tab), one embedding per report step.
Bad input (no such workdir, not a run's workdir, a corrupt line) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import ast
import collections
import dataclasses
import importlib.resources
import io
import json
import math
import os
import sys
import tempfile
import time
import tokenize
import zlib

import numpy as np

from azr_jax import proposal_log, storage
from azr_jax.records import CONFIG_FILE, METRICS_FILE, PROPOSALS_FILE, REPORT_FILE, TENSORBOARD_DIR, read_jsonl
from azr_jax.tasks import ROLES, TASK_TYPES, Role, group_id, group_name

EMBED_DIMS = 4096  # hashed feature space of the program embedding
PROJECTOR_DIMS = 50  # principal components written to TensorBoard's projector (the map uses the first two)
PAGE_MAX_CHARS = 2000  # each text on the page is cut to this
TABLE_ROWS = 20
DATA_MARK = "__REPORT_DATA__"


class ReportError(Exception):
    """Input the report cannot be built from; the CLI prints the message and exits with code 2."""


@dataclasses.dataclass
class Run:
    workdir: str
    metrics: list[dict]
    proposals: list[dict] | None  # None: the run has no proposals.jsonl (it predates the log)
    config: dict


# ---------------------------------------------------------------------------------------------- load


def load(workdir: str) -> Run:
    """The run's metrics, proposals and config; a ReportError if `workdir` is not a run's workdir."""
    if not storage.exists(workdir):
        raise ReportError(f"workdir {workdir} does not exist")
    if not storage.isdir(workdir):
        raise ReportError(f"workdir {workdir} is not a directory")
    metrics_path = storage.join(workdir, METRICS_FILE)
    has_metrics = storage.exists(metrics_path)
    has_proposals = storage.exists(storage.join(workdir, PROPOSALS_FILE))
    if not has_metrics and not has_proposals:
        raise ReportError(
            f"{workdir} holds neither {METRICS_FILE} nor {PROPOSALS_FILE}: not an azr_jax run's workdir"
        )
    try:
        metrics = read_jsonl(metrics_path) if has_metrics else []
        proposals = proposal_log.read(workdir) if has_proposals else None
    except ValueError as e:
        raise ReportError(str(e)) from None
    types = {t.value for t in TASK_TYPES}
    for i, r in enumerate(proposals or [], 1):
        if r["task_type"] not in types or not isinstance(r["step"], int):
            raise ReportError(f"{PROPOSALS_FILE} record {i}: step {r['step']!r}, task type {r['task_type']!r}")
    config = {}
    config_path = storage.join(workdir, CONFIG_FILE)
    if storage.exists(config_path):
        try:
            config = json.loads(storage.read_text(config_path))
        except json.JSONDecodeError as e:
            raise ReportError(f"{config_path}: not JSON ({e})") from None
    return Run(workdir, metrics, proposals, config)


# --------------------------------------------------------------------------------------------- embed


@dataclasses.dataclass(frozen=True)
class SparseRows:
    """A sparse matrix in compressed rows (row i's entries: cols/vals[indptr[i]:indptr[i + 1]])."""

    indptr: np.ndarray
    cols: np.ndarray
    vals: np.ndarray
    dims: int

    @property
    def rows(self) -> int:
        return len(self.indptr) - 1

    def dense(self, lo: int, hi: int) -> np.ndarray:
        out = np.zeros((hi - lo, self.dims))
        a, b = self.indptr[lo], self.indptr[hi]
        out[np.repeat(np.arange(hi - lo), np.diff(self.indptr[lo : hi + 1])), self.cols[a:b]] = self.vals[a:b]
        return out

    def dot(self, m: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """self @ m, a block of rows at a time."""
        return np.concatenate(
            [self.dense(lo, min(lo + chunk, self.rows)) @ m for lo in range(0, self.rows, chunk)]
            or [np.zeros((0, m.shape[1]))]
        )

    def tdot(self, m: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """self.T @ m."""
        out = np.zeros((self.dims, m.shape[1]))
        for lo in range(0, self.rows, chunk):
            hi = min(lo + chunk, self.rows)
            out += self.dense(lo, hi).T @ m[lo:hi]
        return out


_LEAF_NODES = (ast.expr_context, ast.boolop, ast.operator, ast.unaryop, ast.cmpop)  # Load, And, Add, ...: no pairs


def program_features(program: str) -> collections.Counter:
    """Python tokens (names, operators, numbers, short string literals) and AST parent>child node-type pairs.
    A program cut short or broken still gives the tokens before the error."""
    feats = collections.Counter()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(program).readline):
            if tok.type in (tokenize.NAME, tokenize.OP, tokenize.NUMBER, tokenize.STRING):
                feats["t:" + tok.string[:32]] += 1
    except (tokenize.TokenError, SyntaxError, ValueError):
        pass
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError, RecursionError):
        return feats
    stack = [tree]
    while stack:
        parent = stack.pop()
        for child in ast.iter_child_nodes(parent):
            if not isinstance(child, _LEAF_NODES):
                feats[f"a:{type(parent).__name__}>{type(child).__name__}"] += 1
                stack.append(child)
    return feats


def embed(programs: list[str], dims: int = EMBED_DIMS) -> SparseRows:
    """Hashed TF-IDF rows (sublinear tf, smoothed idf), L2-normalised; features hash with crc32, so the same
    programs always give the same rows."""
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    keys, counts = [], []
    for i, program in enumerate(programs):
        if program not in cache:
            feats = program_features(program)
            cache[program] = (
                np.array([zlib.crc32(f.encode("utf-8", "surrogatepass")) % dims for f in feats], np.int64),
                np.array(list(feats.values()), np.float64),
            )
        cols, c = cache[program]
        keys.append(i * dims + cols)
        counts.append(c)
    keys = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    uniq, inverse = np.unique(keys, return_inverse=True)  # sorted by row, then column; collisions summed
    tf = 1.0 + np.log(np.bincount(inverse, weights=np.concatenate(counts) if counts else None))
    rows, cols = uniq // dims, uniq % dims
    n = len(programs)
    idf = np.log((1.0 + n) / (1.0 + np.bincount(cols, minlength=dims))) + 1.0
    vals = tf * idf[cols]
    norms = np.sqrt(np.bincount(rows, weights=vals**2, minlength=n))
    vals = vals / np.maximum(norms[rows], 1e-12)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
    return SparseRows(indptr, cols.astype(np.int64), vals, dims)


def orthonormal(y: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the span of y's columns, from the eigenvectors of its small Gram matrix (twice,
    for accuracy); directions that add nothing are dropped. Not LAPACK's QR: with threaded OpenBLAS on a busy
    machine it takes seconds even for small matrices."""
    for _ in range(2):
        w, v = np.linalg.eigh(y.T @ y)
        keep = w > w.max(initial=0.0) * 1e-10
        y = y @ (v[:, keep] / np.sqrt(w[keep]))
    return y


def pca(x: SparseRows, k: int, iters: int = 4, seed: int = 0) -> np.ndarray:
    """Scores of the rows on their top `k` principal components, [rows, k] (zero columns past the rank):
    a randomised SVD of the centred rows (Halko, Martinsson & Tropp 2011) with power iterations, never
    forming the dense matrix. Deterministic: a fixed seed, and each component's largest loading positive."""
    n = x.rows
    out = np.zeros((n, k))
    mean = np.bincount(x.cols, weights=x.vals, minlength=x.dims) / max(n, 1)

    def right(m):  # (x - mean) @ m
        return x.dot(m) - mean @ m

    def left(m):  # (x - mean).T @ m
        return x.tdot(m) - np.outer(mean, m.sum(0))

    q = orthonormal(right(np.random.default_rng(seed).standard_normal((x.dims, min(k + 10, x.dims)))))
    for _ in range(iters):
        q = orthonormal(right(orthonormal(left(q))))
    b = left(q).T  # the centred rows are close to q @ b
    w, u = np.linalg.eigh(b @ b.T)  # b = u s vt with s^2 = w, ascending
    r = min(k, int((w > w.max(initial=0.0) * 1e-10).sum()))
    if r == 0:
        return out
    u, s = u[:, ::-1][:, :r], np.sqrt(w[::-1][:r])
    vt = (u.T @ b) / s[:, None]
    signs = np.sign(vt[np.arange(r), np.abs(vt).argmax(1)])
    out[:, :r] = (q @ u) * (s * signs)
    return out


# --------------------------------------------------------------------------------------------- stats


def _num(v, digits: int = 4):
    """A JSON-able rounded float, None for missing or non-finite."""
    return None if v is None or not math.isfinite(v) else round(float(v), digits)


def _cut(text: str | None, max_chars: int = PAGE_MAX_CHARS) -> str:
    text = text or ""
    return text if len(text) <= max_chars else text[:max_chars] + f"... [{len(text) - max_chars} more characters]"


def curves(metrics: list[dict]) -> dict:
    """The charts of metrics.jsonl: per group, a null where the step has no value or the group was empty
    (`step_metrics` logs zeros for an empty group)."""
    by_step = {}
    for m in metrics:
        by_step.setdefault(m["step"], {}).update(m)
    steps = sorted(by_step)

    def values(key, count_key=None):
        out = []
        for s in steps:
            m = by_step[s]
            v = m.get(key)
            empty = count_key is not None and m.get(count_key) == 0
            out.append(None if empty or not isinstance(v, (int, float)) else _num(v))
        return out

    def group_series(metric, roles=ROLES):
        series = []
        for role in roles:
            for t in TASK_TYPES:
                g = group_name(group_id(t, role))
                name = metric(role) if callable(metric) else metric
                series.append(
                    {"name": g, "task": t.value, "role": role.value, "values": values(f"{g}/{name}", f"{g}/count")}
                )
        return series

    charts = [
        {"title": "Reward", "series": group_series("reward")},
        {
            "title": "Valid rate (proposer) / accuracy (solver)",
            "range": [0, 1],
            "series": group_series(lambda r: "valid_rate" if r == Role.PROPOSER else "accuracy"),
        },
        {
            "title": "Learnability solve rate of valid proposals",
            "range": [0, 1],
            "series": group_series("solve_rate", (Role.PROPOSER,)),
        },
        {"title": "Response length (mean tokens)", "series": group_series("response_length_mean")},
    ]
    validation = [
        {"name": name, "task": None, "role": None, "values": values(key)}
        for key, name in (("validation/cruxeval_o", "CRUXEval-O"), ("validation/cruxeval_i", "CRUXEval-I"))
    ]
    if any(v is not None for s in validation for v in s["values"]):
        charts.append({"title": "Validation accuracy", "range": [0, 1], "series": validation})
    return {"steps": steps, "charts": charts}


def trends(proposals: list[dict], valid: list[dict], x: SparseRows) -> dict:
    """Per step and task type: valid proposals, mean AST size, the fraction of distinct programs and the mean
    pairwise cosine distance of their embeddings (from the sum s of m unit rows: 1 - (|s|^2 - m) / (m (m - 1)))."""
    steps = sorted({r["step"] for r in proposals})
    types = [t.value for t in TASK_TYPES]
    cell = {(s, t): i for i, (s, t) in enumerate((s, t) for s in steps for t in types)}
    group = np.array([cell[r["step"], r["task_type"]] for r in valid], np.int64)
    m = np.bincount(group, minlength=len(cell)).astype(np.float64)
    row_of_entry = np.repeat(np.arange(x.rows), np.diff(x.indptr))
    sums = np.bincount(group[row_of_entry] * x.dims + x.cols, weights=x.vals, minlength=len(cell) * x.dims)
    sq = (sums.reshape(len(cell), x.dims) ** 2).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = np.where(m >= 2, 1.0 - (sq - m) / (m * (m - 1)), np.nan)
        ast_size = np.bincount(group, weights=[r.get("ast_size") or 0 for r in valid], minlength=len(cell)) / m
    distinct = collections.defaultdict(set)
    for r, g in zip(valid, group):
        distinct[g].add(r.get("program"))

    def series(values):
        return [
            {"name": t, "task": t, "role": "propose", "values": [_num(values[cell[s, t]]) for s in steps]}
            for t in types
        ]

    return {
        "steps": steps,
        "charts": [
            {"title": "Valid proposals per step", "series": series(m)},
            {"title": "Mean AST size of valid programs", "series": series(ast_size)},
            {
                "title": "Distinct programs / valid proposals",
                "range": [0, 1],
                "series": series([len(distinct[g]) / m[g] if m[g] else np.nan for g in range(len(cell))]),
            },
            {
                "title": "Mean pairwise cosine distance of program embeddings",
                "range": [0, 1],
                "series": series(distance),
            },
        ],
    }


# ---------------------------------------------------------------------------------------------- page


class Texts:
    """The page's string table: each distinct text once (cut to PAGE_MAX_CHARS), referred to by index."""

    def __init__(self):
        self.index: dict[str, int] = {}

    def __call__(self, text: str | None) -> int:
        return self.index.setdefault(_cut(text), len(self.index))

    def table(self) -> list[str]:
        return list(self.index)


def points(valid: list[dict], xy: np.ndarray, text: Texts) -> list[dict]:
    """The map's points, in the order of `valid`."""
    out = []
    for r, (px, py) in zip(valid, xy):
        out.append(
            {
                "x": _num(px),
                "y": _num(py),
                "step": r["step"],
                "type": r["task_type"],
                "solve_rate": _num(r.get("solve_rate")),
                "reward": _num(r.get("reward")),
                "ast_size": r.get("ast_size"),
                "program": text(r.get("program")),
                "inputs": [text(v) for v in r.get("inputs") or []],
                "outputs": [text(v) for v in r.get("outputs") or []],
                "message": text(r.get("message")),
                "learnability": [[text(a), bool(ok)] for a, ok in r.get("learnability") or []],
                "solver": [[text(a), _num(rew)] for a, rew in r.get("solver") or []],
            }
        )
    return out


def learnability_tables(valid: list[dict]) -> dict:
    """Indices into the points: tasks with 0 < s < 1 closest to s = 0.5 first, and the latest tasks with
    s = 0 and s = 1; with the counts of each kind per task type."""
    rates = [r.get("solve_rate") for r in valid]
    latest = sorted(range(len(valid)), key=lambda i: -valid[i]["step"])
    middle = [i for i in range(len(valid)) if rates[i] is not None and 0 < rates[i] < 1]
    counts = {}
    for t in TASK_TYPES:
        rs = [s for r, s in zip(valid, rates) if r["task_type"] == t.value]
        counts[t.value] = [
            sum(s == 0 for s in rs),
            sum(s is not None and 0 < s < 1 for s in rs),
            sum(s == 1 for s in rs),
            sum(s is None for s in rs),
        ]
    return {
        "counts": counts,
        "middle": sorted(middle, key=lambda i: (abs(rates[i] - 0.5), -valid[i]["step"]))[:TABLE_ROWS],
        "never": [i for i in latest if rates[i] == 0][:TABLE_ROWS],
        "always": [i for i in latest if rates[i] == 1][:TABLE_ROWS],
    }


def reasons(proposals: list[dict], text: Texts) -> dict:
    """Counts of each verdict reason per task type, with the latest rejected response of each as an example."""
    types = [t.value for t in TASK_TYPES]
    counts = collections.Counter((r.get("reason") or "ok", r["task_type"]) for r in proposals)
    examples = {}
    for r in proposals:
        if not r["valid"]:
            examples[r.get("reason") or "ok", r["task_type"]] = r.get("text")
    names = sorted({k[0] for k in counts}, key=lambda k: (-sum(counts[k, t] for t in types), k))
    return {
        "types": types,
        "totals": [sum(r["task_type"] == t for r in proposals) for t in types],
        "truncated": [sum(r["task_type"] == t and bool(r.get("truncated")) for r in proposals) for t in types],
        "rows": [
            {
                "reason": k,
                "counts": [counts[k, t] for t in types],
                "examples": [text(examples[k, t]) if (k, t) in examples else None for t in types],
            }
            for k in names
        ],
    }


def header(run: Run, valid_count: int) -> dict:
    c = run.config
    model = c.get("model", {}) if isinstance(c.get("model"), dict) else {}
    highlights = [
        ("model", model.get("checkpoint") or (f"preset {model['preset']}" if model.get("preset") else None)),
        ("template", c.get("template")),
        ("answer_format", c.get("answer_format")),
        ("batch_size", c.get("batch_size")),
        ("learnability_rollouts", c.get("learnability_rollouts")),
        ("total_steps", c.get("total_steps")),
    ]
    steps = sorted({m["step"] for m in run.metrics} | {r["step"] for r in run.proposals or []})
    return {
        "workdir": run.workdir,
        "steps": [steps[0], steps[-1]] if steps else None,
        "proposals": None if run.proposals is None else len(run.proposals),
        "valid": valid_count,
        "config": [[k, str(v)] for k, v in highlights if v not in (None, "")],
    }


def page_data(run: Run, valid: list[dict], x: SparseRows | None, xy: np.ndarray | None) -> dict:
    text = Texts()
    data = {"header": header(run, len(valid)), "curves": curves(run.metrics), "notices": []}
    if run.proposals is None:
        data["notices"].append(
            f"{PROPOSALS_FILE} is missing (the run predates the proposal log): no map, tables or trends."
        )
    if run.proposals is not None:
        data["reasons"] = reasons(run.proposals, text)
        data["learnability"] = learnability_tables(valid)
        data["points"] = points(valid, xy, text) if valid else []
        data["trends"] = trends(run.proposals, valid, x) if valid else None
    data["texts"] = text.table()
    return data


def render(data: dict) -> str:
    """The page: the template with the data as JSON in which '<', '>' and '&' are escaped, so no text can
    close the script element or open a comment."""
    blob = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    blob = blob.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    template = importlib.resources.files("azr_jax").joinpath("report_page.html").read_text(encoding="utf-8")
    head, mark, tail = template.partition(DATA_MARK)
    assert mark, f"report_page.html lacks {DATA_MARK}"
    return head + blob + tail


# ---------------------------------------------------------------------------------------- projector


def write_projector(tensorboard_dir: str, vectors: np.ndarray, valid: list[dict], step: int) -> str:
    """The embedding and its metadata for TensorBoard's projector, as tensorboardX's `add_embedding` writes them,
    under `<tensorboard_dir>/<step>/proposals`. tensorboardX appends to projector_config.pbtxt and writes only
    to local paths, so it writes into a temporary directory; its files are then copied over, and the config's
    entry for this step replaces an earlier report's (other steps' entries stay). Returns the embedding's name."""
    from tensorboardX import SummaryWriter

    def one_line(program):
        return " ⏎ ".join(line.strip() for line in (program or "").strip().split("\n"))[:200]

    rows = [
        [
            r["step"],
            r["task_type"],
            "none" if r.get("solve_rate") is None else r["solve_rate"],
            r.get("reward"),
            one_line(r.get("program")),
        ]
        for r in valid
    ]
    rows = [[str(v).replace("\t", " ").replace("\r", " ").replace("\n", " ") for v in row] for row in rows]
    name = f"proposals:{step:05d}"
    with tempfile.TemporaryDirectory(prefix="azr-report-") as tmp:
        writer = SummaryWriter(tmp)
        writer.add_embedding(
            np.round(vectors, 4),
            metadata=rows,
            metadata_header=["step", "task_type", "solve_rate", "reward", "program"],
            global_step=step,
            tag="proposals",
        )
        writer.close()
        subdir = f"{step:05d}/proposals"
        storage.upload_dir(os.path.join(tmp, *subdir.split("/")), storage.join(tensorboard_dir, subdir))
        with open(os.path.join(tmp, "projector_config.pbtxt")) as f:
            entry = f.read()
    config_path = storage.join(tensorboard_dir, "projector_config.pbtxt")
    old = storage.read_text(config_path) if storage.exists(config_path) else ""
    kept = [e for e in old.split("embeddings {\n") if e.strip() and f'tensor_name: "{name}"' not in e]
    storage.write_text(config_path, "".join("embeddings {\n" + e for e in kept) + entry)
    return name


# ------------------------------------------------------------------------------------------------ CLI


def build(workdir: str, output: str | None = None, tensorboard: bool = True, log=print) -> dict:
    """Writes the report of `workdir` to `output` (default `<workdir>/report.html`, atomically) and, with
    `tensorboard`, the projector embedding. Returns what it did: output, proposals, valid, bytes, seconds."""
    start = time.perf_counter()
    workdir = os.fspath(workdir)
    output = os.fspath(output) if output else storage.join(workdir, REPORT_FILE)
    if not output.endswith((".html", ".htm")):
        raise ReportError(f"--output {output} must end in .html, so that no file of the run is overwritten")
    run = load(workdir)
    valid = [r for r in run.proposals or [] if r["valid"]]
    x = embed([r.get("program") or "" for r in valid]) if valid else None
    scores = pca(x, PROJECTOR_DIMS) if valid else None
    if run.proposals is None:
        print(
            f"report: {workdir} has no {PROPOSALS_FILE} (the run predates it): curves only, no map", file=sys.stderr
        )
    elif not valid:
        print(f"report: none of the {len(run.proposals)} proposals is valid: no map", file=sys.stderr)
    html = render(page_data(run, valid, x, None if scores is None else scores[:, :2]))
    storage.write_text(output, html)
    projector = None
    if tensorboard and valid:
        projector = write_projector(
            storage.join(workdir, TENSORBOARD_DIR), scores, valid, max(r["step"] for r in valid)
        )
    summary = {
        "output": output,
        "proposals": None if run.proposals is None else len(run.proposals),
        "valid": len(valid),
        "bytes": len(html.encode()),
        "projector": projector,
        "seconds": time.perf_counter() - start,
    }
    log(
        f"wrote {output} ({summary['bytes'] / 2**20:.1f} MiB; {len(valid)} valid of "
        f"{summary['proposals'] or 0} proposals) in {summary['seconds']:.1f}s"
        + (f"; projector embedding {projector} in {storage.join(workdir, TENSORBOARD_DIR)}" if projector else "")
    )
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m azr_jax.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--workdir", required=True, help="the run's workdir")
    p.add_argument("--output", default=None, help="the HTML file to write (default: <workdir>/report.html)")
    p.add_argument(
        "--tensorboard",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also write the embedding to TensorBoard's projector under <workdir>/tensorboard",
    )
    args = p.parse_args(argv)
    try:
        build(args.workdir, args.output, args.tensorboard)
    except ReportError as e:
        print(f"report: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
