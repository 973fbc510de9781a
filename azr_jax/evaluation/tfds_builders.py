"""TensorFlow-Datasets builders over the local benchmark files, for the TF-free `tfds.data_source`.

Importing this module registers one builder per benchmark, named `azr_<benchmark>` (e.g.
`azr_cruxeval_o`). Each stores the raw records (as JSON text, with their file position) in
ArrayRecord files, which `tfds.data_source` reads without TensorFlow; `load_via_tfds` turns them back
into `Problem`s in file order. The source file is a builder argument (`source=`), defaulting to the
same file `benchmarks.source_path` reads: the gzipped copy vendored in `<repo>/third_party`, or the
benchmark's file (plain or .gz) under `data_source_dir` when that is given. A prepared dataset is
cached under `data_dir` by name and version: delete it to re-prepare from a different source file.

    import tensorflow_datasets as tfds
    import azr_jax.evaluation.tfds_builders  # registers the builders
    ds = tfds.data_source("azr_mbppplus", data_dir="~/tfds")["test"]

Only this module imports tensorflow_datasets; `azr_jax.evaluation` itself never does.
"""

from __future__ import annotations

import json

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from azr_jax.evaluation import benchmarks as B

VERSION = "1.0.0"
SPLIT = "test"


class _LocalBenchmark(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base builder: one split, one example per record of the benchmark's local file."""

    VERSION = tfds.core.Version(VERSION)
    BENCHMARK: str = ""

    def __init__(self, *, source: str | None = None, data_source_dir: str | None = None, **kwargs):
        # ArrayRecord is the format tfds.data_source reads; TFRecord writing would need TensorFlow.
        kwargs.setdefault("file_format", "array_record")
        self._source = source
        self._data_source_dir = data_source_dir
        super().__init__(**kwargs)

    # tfds 4.9.10 derives code_path through importlib_resources, a module it no longer installs on
    # Python >= 3.9; the builder's own file is what it is after.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        return epath.Path(__file__)

    def _info(self):
        return self.dataset_info_from_configs(
            description=f"{self.BENCHMARK}: local benchmark records for azr_jax evaluation.",
            features=tfds.features.FeaturesDict(
                {
                    "index": tfds.features.Scalar(dtype=np.int64),
                    "record": tfds.features.Text(),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        path = B.source_path(self.BENCHMARK, self._data_source_dir, self._source)
        return {SPLIT: self._generate_examples(path)}

    def _generate_examples(self, path):
        for i, record in enumerate(B.read_jsonl(path)):
            yield i, {"index": i, "record": json.dumps(record)}


def builder_name(benchmark: str) -> str:
    return f"azr_{benchmark}"


def _register(benchmark: str) -> type:
    camel = "".join(part.title() for part in builder_name(benchmark).split("_"))
    # tfds registers a builder under the snake_case of its class name: AzrCruxevalO -> azr_cruxeval_o.
    return type(camel, (_LocalBenchmark,), {"BENCHMARK": benchmark, "__module__": __name__})


BUILDERS = {name: _register(name) for name in B.BENCHMARKS}


def load_via_tfds(
    benchmark: str,
    *,
    tfds_dir: str,
    source: str | None = None,
    data_source_dir: str | None = None,
    limit: int | None = None,
) -> list[B.Problem]:
    """Prepare (once) and read a benchmark through `tfds.data_source`; Problems in file order."""
    ds = tfds.data_source(
        builder_name(benchmark),
        split=SPLIT,
        data_dir=tfds_dir,
        builder_kwargs={"source": source, "data_source_dir": data_source_dir},
    )
    rows = sorted((ds[i] for i in range(len(ds))), key=lambda row: int(row["index"]))
    records = (json.loads(row["record"]) for row in rows)
    return B.to_problems(benchmark, records, limit)
