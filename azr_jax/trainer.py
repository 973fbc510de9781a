"""The trainer: build the model and sampler from a config, run (or resume) self-play, validate, save.

`python -m azr_jax.main` is its command line; tests and benchmarks call `train` and `build` directly. The
loop owns the side effects (checkpoints, metrics files, validation, the HF export) and rebinds the learner
state that each `selfplay.train_step` returns.
"""

from __future__ import annotations

import time

import jax
from flax import nnx

from azr_jax import distributed, learner, proposal_log, seeding, storage
from azr_jax.buffers import TaskBuffers
from azr_jax.checkpointing import Checkpointer
from azr_jax.evaluation import evaluate
from azr_jax.evaluation.benchmarks import check_files
from azr_jax.executor import ExecutorPool
from azr_jax.formats import export_hf, load_hf_checkpoint, load_tokenizer
from azr_jax.metrics import MetricsWriter, group_table
from azr_jax.model import init_model, make_mesh, preset
from azr_jax.records import CHECKPOINTS_DIR, CONFIG_FILE, EXPORTS_DIR, TENSORBOARD_DIR
from azr_jax.rollouts import Context
from azr_jax.sampling import Sampler
from azr_jax.selfplay import train_step
from azr_jax.settings import ConfigError, StepSettings, check_config, check_microbatch


def build(config):
    """Mesh, model (loaded straight into its shardings), tokenizer and sampler."""
    mesh = make_mesh(dict(config.mesh))
    check_microbatch(config, mesh)
    m = config.model
    dtypes = dict(param_dtype=m.param_dtype, compute_dtype=m.compute_dtype, remat=m.remat, attention=m.attention)
    checkpoint = storage.local_copy(m.checkpoint) if m.checkpoint else ""  # gs://: one download per host, cached
    tokenizer = load_tokenizer(storage.local_copy(m.tokenizer) if m.tokenizer else checkpoint)
    if checkpoint:
        model = load_hf_checkpoint(checkpoint, mesh, **dtypes)
    else:
        model = init_model(preset(m.preset, vocab_size=len(tokenizer), **dtypes), mesh, seed=config.seed)
    s = config.sampling
    sampler = Sampler(
        model,
        tokenizer,
        cache_dtype=s.cache_dtype,
        max_rows=s.max_rows,
        kv_cache_gib=s.kv_cache_gib,
        engine=s.engine,
        prefill_tokens=s.prefill_tokens,
    )
    return mesh, model, tokenizer, sampler


def validate(sampler, tokenizer, pool, config, log) -> dict[str, float]:
    """Greedy CRUXEval-O (deduction) and CRUXEval-I (abduction) on the first `eval.limit` problems."""
    report = evaluate(
        sampler,
        tokenizer,
        pool,
        ["cruxeval_o", "cruxeval_i"],
        limit=config.eval.limit,
        template=config.template,
        max_new_tokens=config.eval.max_new_tokens,
        strictness=config.answer_format,
        data_dir=config.data_dir or None,
        batch_size=config.eval.batch_size,
        max_prompt_tokens=config.max_prompt_tokens,
        log=log,
    )
    return {f"validation/{k}": float(v) for k, v in report.scores.items() if k in ("cruxeval_o", "cruxeval_i")}


def check_validation_files(config) -> None:
    """Validation reads CRUXEval: fail before loading the model, not after the first eval.every_steps."""
    if not config.eval.every_steps:
        return
    try:
        check_files(["cruxeval_o", "cruxeval_i"], config.data_dir or None)
    except FileNotFoundError as e:
        raise ConfigError(
            f"bad config: validation (eval.every_steps={config.eval.every_steps}) needs the CRUXEval "
            f"files; set data_dir to a directory that has them ('' = the vendored copy) or "
            f"eval.every_steps=0. {e}"
        ) from e


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def resume_or_seed(ctx, state, checkpointer, writer, config, log):
    """(first step, state, buffers, validation at step 0): the newest readable checkpoint, or a fresh start:
    the earlier run's records archived, the buffers seeded, validation before training when configured."""
    restored = checkpointer.restore_latest(_abstract(state.checkpoint()))
    if restored:
        start, tree, extra = restored
        state = learner.LearnerState(**tree)
        nnx.update(ctx.sampler.model, state.params)
        buffers = TaskBuffers.from_dict(extra["buffers"])
        writer.truncate_after(start)
        log(f"resumed from step {start} (buffers {buffers.sizes()})")
        return start, state, buffers, {}
    archive = writer.start_fresh()
    if archive:
        log(f"no checkpoint to resume: the earlier run's records moved to {archive}")
    t, buffers = time.perf_counter(), TaskBuffers.seeded()
    seeding.seed_buffers(ctx, buffers, state.key, log)
    log(f"seeded the buffers in {time.perf_counter() - t:.0f}s: {buffers.sizes()}")
    before = {}
    if config.eval.every_steps and config.eval.at_start:
        before = validate(ctx.sampler, ctx.tokenizer, ctx.executor, config, log)
        writer.write_scalars(0, before)
    return 0, state, buffers, before


def record_step(writer, done: int, result, metrics, config, log, seconds: float) -> None:
    """The step's scalars (`metrics`: the step's and validation's), proposals, text samples and progress line."""
    writer.write_scalars(done, metrics)
    records = proposal_log.records(
        done, result.proposals, result.solver, config.answer_format, config.proposal_log_max_chars
    )
    writer.write_proposals(done, records)
    if config.log_samples_every_steps and done % config.log_samples_every_steps == 0:
        writer.write_texts(done, result.texts)
    log(writer.progress_line(done, seconds, metrics))


def train(config, workdir: str, log=print) -> dict[str, float]:
    """Runs (or resumes) self-play until `config.total_steps`; returns the last step's metrics."""
    check_config(config)
    check_validation_files(config)
    if distributed.is_primary():
        storage.makedirs(workdir)
        storage.write_text(storage.join(workdir, CONFIG_FILE), config.to_json_best_effort(indent=2))
    mesh, model, tokenizer, sampler = build(config)
    log(
        f"model: {config.model.checkpoint or config.model.preset}, {model.cfg.num_params / 1e6:.0f}M parameters, "
        f"mesh {dict(mesh.shape)}" + (f", {jax.process_count()} processes" if jax.process_count() > 1 else "")
    )
    checkpointer = Checkpointer(
        storage.join(workdir, CHECKPOINTS_DIR),
        keep=config.keep_checkpoints,
        save_interval_steps=config.checkpoint_every_steps or 1,
    )
    checkpointer.install_preemption_handler()
    writer = MetricsWriter(
        workdir, total_steps=config.total_steps, proposals_max_mb=config.proposal_log_max_mb, log=log
    )
    first, metrics, done = None, {}, 0
    with (
        jax.set_mesh(mesh),
        ExecutorPool(num_workers=config.executor.num_workers or None, timeout_s=config.executor.timeout_s) as local,
    ):
        pool = distributed.SpreadPool(local)  # each process runs its share of the jobs; all get every verdict
        ctx = Context(StepSettings.from_config(config), tokenizer, sampler, pool)
        learn, state = learner.init(config, model)  # the KL reference is the weights as loaded, before a restore
        try:
            start, state, buffers, before = resume_or_seed(ctx, state, checkpointer, writer, config, log)
            for step in range(start, config.total_steps):
                t = time.perf_counter()
                state, result = train_step(ctx, state, buffers, step, learn)
                metrics, done = result.metrics, step + 1
                if first is None:  # this run's first step; validation "before" it is the one at step 0
                    first = result.metrics | before
                if config.eval.every_steps and done % config.eval.every_steps == 0:
                    metrics = metrics | validate(sampler, tokenizer, pool, config, log)
                record_step(writer, done, result, metrics, config, log, time.perf_counter() - t)
                if save_or_stop(checkpointer, writer, done, state, buffers, config, log):
                    break
            else:
                if config.export_hf_at_end:
                    out = storage.join(workdir, EXPORTS_DIR, f"step_{config.total_steps}")
                    export_hf(model, tokenizer, out)  # every process gathers, process 0 writes
                    log(f"exported {out}")
        finally:
            checkpointer.wait()
            checkpointer.close()
            writer.close()
    if first is not None and done - start == 1 and not before:
        log(f"\nper group, step {done} (the only step of this run):\n" + group_table(None, metrics))
    elif first is not None:
        log("\nper group, first step -> last step of this run:\n" + group_table(first, metrics))
    log(f"TensorBoard: tensorboard --logdir {storage.join(workdir, TENSORBOARD_DIR)}")
    log(f"every proposal, the curves and the map of programs: python -m azr_jax.report --workdir {workdir}")
    return metrics


def save_or_stop(checkpointer, writer, done: int, state, buffers, config, log) -> bool:
    """Saves every `checkpoint_every_steps`, at the last step, and when any process was preempted (SIGTERM):
    then every process saves this step and the loop stops (True)."""
    last = done == config.total_steps
    preempted = distributed.any_process(checkpointer.preempted)  # SIGTERM on any host: all stop here
    if config.checkpoint_every_steps or preempted:  # 0: only when preempted
        checkpointer.save(done, state.checkpoint(), {"buffers": buffers.to_dict()}, force=last or preempted)
    writer.flush()
    if preempted and not last:
        log(f"preempted: saved step {done}, exiting")
        return True
    return False
