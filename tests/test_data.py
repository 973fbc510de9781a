"""The benchmark data vendored in third_party/: intact, the loaders' default, overridable, and checked early."""

import gzip
import hashlib
import json
import os

import pytest

from azr_jax.evaluation import benchmarks as B

MANIFEST = B.vendored_manifest()
FILE_BACKED = [name for name, bench in B.BENCHMARKS.items() if bench.file is not None]


def _cruxeval_record(i: int) -> dict:
    return {"code": f"def f(x):\n    return x + {i}", "input": "1", "output": str(1 + i), "id": f"mine_{i}"}


def _write_jsonl(path, records, gz=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(text, mtime=0) if gz else text)


def test_manifest_covers_every_file_backed_benchmark():
    assert B.default_data_dir() == os.path.join(B.REPO_ROOT, "third_party")
    listed = {name: rel for rel, entry in MANIFEST.items() for name in entry["benchmarks"]}
    assert listed == {name: B.BENCHMARKS[name].file for name in FILE_BACKED}


@pytest.mark.parametrize("rel", sorted(MANIFEST))
def test_vendored_file_is_intact(rel):
    """Each .gz exists, is what the manifest says (bytes and content) and every record is JSON."""
    entry = MANIFEST[rel]
    assert entry["gz"] == rel + ".gz"
    path = os.path.join(B.default_data_dir(), entry["gz"])
    packed = open(path, "rb").read()
    assert len(packed) == entry["gz_bytes"] < 4 * 2**20
    assert hashlib.sha256(packed).hexdigest() == entry["gz_sha256"]
    data = gzip.decompress(packed)
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    records = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    assert len(records) == entry["records"]
    folder = os.path.dirname(path)
    readme = open(os.path.join(folder, "README.md"), encoding="utf-8").read()
    assert entry["sha256"] in readme and entry["gz_sha256"] in readme and str(entry["records"]) in readme


@pytest.mark.parametrize("name", FILE_BACKED)
def test_every_file_backed_benchmark_loads_from_the_vendored_copy(name):
    path = B.source_path(name)
    assert path == os.path.join(B.default_data_dir(), B.BENCHMARKS[name].file + ".gz")
    problems = B.load_problems(name)  # every record converts
    assert len(problems) == MANIFEST[B.BENCHMARKS[name].file]["records"]
    assert len({p.id for p in problems}) == len(problems)
    assert all(p.prompt and p.benchmark == name for p in problems)


def test_data_dir_in_the_same_layout_overrides_the_default(tmp_path):
    _write_jsonl(tmp_path / "cruxeval" / "cruxeval.jsonl", [_cruxeval_record(i) for i in range(2)])
    assert B.source_path("cruxeval_i", data_dir=str(tmp_path)) == str(tmp_path / "cruxeval" / "cruxeval.jsonl")
    problems = B.load_problems("cruxeval_o", data_dir=str(tmp_path))
    assert [(p.id, p.gold) for p in problems] == [("mine_0", "1"), ("mine_1", "2")]
    # a gzipped file in the same place is preferred over the plain one
    _write_jsonl(tmp_path / "cruxeval" / "cruxeval.jsonl.gz", [_cruxeval_record(5)], gz=True)
    assert [p.id for p in B.load_problems("cruxeval_o", data_dir=str(tmp_path))] == ["mine_5"]
    # the default is untouched
    assert B.load_problems("cruxeval_o", limit=1)[0].id == "sample_0"


def test_missing_file_names_the_benchmark_the_paths_and_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        B.load_problems("gsm8k", data_dir=str(tmp_path))
    message = str(e.value)
    expected = str(tmp_path / "gsm8k" / "gsm8k.jsonl")
    assert "gsm8k" in message and expected in message and expected + ".gz" in message and "data_dir" in message


def test_check_files_lists_every_missing_file(tmp_path):
    B.check_files(B.BENCHMARKS)  # the vendored copy has them all (path-only benchmarks are skipped)
    _write_jsonl(tmp_path / "gsm8k" / "gsm8k.jsonl", [{"question": "1+1?", "answer": "#### 2"}])
    B.check_files(["gsm8k", "humaneval", "livecodebench"], data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        B.check_files(["cruxeval_o", "gsm8k", "math500"], data_dir=str(tmp_path))
    message = str(e.value)
    assert str(tmp_path / "cruxeval" / "cruxeval.jsonl") in message
    assert str(tmp_path / "math500" / "math500.jsonl") in message
    assert "gsm8k" not in message and str(tmp_path) in message


def test_tfds_reads_the_vendored_gz_and_a_plain_data_dir(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    from azr_jax.evaluation.tfds_builders import load_via_tfds

    assert B.source_path("math500").endswith(".jsonl.gz")
    assert load_via_tfds("math500", tfds_dir=str(tmp_path / "tfds_default")) == B.load_problems("math500")
    plain = tmp_path / "plain"
    _write_jsonl(plain / "cruxeval" / "cruxeval.jsonl", [_cruxeval_record(i) for i in range(3)])
    via_tfds = load_via_tfds("cruxeval_i", tfds_dir=str(tmp_path / "tfds_plain"), data_source_dir=str(plain))
    assert via_tfds == B.load_problems("cruxeval_i", data_dir=str(plain))
    assert [p.id for p in via_tfds] == ["mine_0", "mine_1", "mine_2"]


def test_training_with_validation_checks_the_data_before_loading_the_model(tmp_path):
    """The model path does not exist: had the trainer loaded it first, this would be a different error."""
    from azr_jax.defaults import paper_config
    from azr_jax.settings import ConfigError
    from azr_jax.trainer import train

    c = paper_config()
    c.model.checkpoint = str(tmp_path / "no_such_model")
    c.data_dir = str(tmp_path / "empty")
    c.eval.every_steps = 1
    workdir = tmp_path / "workdir"
    with pytest.raises(ConfigError) as e:
        train(c, str(workdir), log=lambda s: None)
    message = str(e.value)
    assert "data_dir" in message and "eval.every_steps" in message
    assert str(tmp_path / "empty" / "cruxeval" / "cruxeval.jsonl") in message
    assert not workdir.exists()  # nothing was written either
