"""The trainer: build the model and sampler from a config, run (or resume) self-play, validate, save.

`python -m azr_jax.main` is its command line; tests and benchmarks call `train` and `build` directly.
"""

from __future__ import annotations

import time


class ConfigError(ValueError):
    """A config that cannot be run: the message names the field."""


def check_config(c) -> None:
    from azr_jax.buffers import SEED_DEDUP
    from azr_jax.model.attention import IMPLEMENTATIONS
    from azr_jax.parsing import STRICTNESS
    from azr_jax.sampling.sampler import ENGINES
    from azr_jax.tasks import TaskType

    def need(ok, message):
        if not ok:
            raise ConfigError(f"bad config: {message}")

    known = [t.value for t in TaskType]
    need(c.task_types and all(t in known for t in c.task_types), f"task_types={c.task_types}; choose from {known}")
    need(bool(c.model.checkpoint) != bool(c.model.preset), "set exactly one of model.checkpoint and model.preset")
    need(not c.model.preset or c.model.tokenizer, "model.preset needs model.tokenizer (a tokenizer directory)")
    need(c.answer_format in STRICTNESS, f"answer_format={c.answer_format!r}; choose from {STRICTNESS}")
    need(c.template in ("azr", "chat"), f"template={c.template!r}; choose azr or chat")
    need(c.solver_tasks in ("current", "previous"), f"solver_tasks={c.solver_tasks!r}")
    need(c.seed_dedup in SEED_DEDUP, f"seed_dedup={c.seed_dedup!r}; choose from {SEED_DEDUP}")
    for name in ("total_steps", "batch_size", "learnability_rollouts", "max_prompt_tokens", "max_response_tokens"):
        need(c[name] >= 1, f"{name}={c[name]} must be >= 1")
    need(c.optimizer.microbatch_size >= 1, "optimizer.microbatch_size must be >= 1")
    need(c.num_references >= 0, "num_references must be >= 0")
    need(c.seed_batch_size >= 0, "seed_batch_size must be >= 0 (0: batch_size)")
    need(c.checkpoint_every_steps >= 0, "checkpoint_every_steps must be >= 0 (0: only on preemption)")
    need(
        c.proposal_log_max_mb >= 0 and c.proposal_log_max_chars >= 1,
        "proposal_log_max_mb must be >= 0 (0: no log) and proposal_log_max_chars >= 1",
    )
    need(c.model.attention in IMPLEMENTATIONS, f"model.attention={c.model.attention!r}; choose from {IMPLEMENTATIONS}")
    need(c.sampling.engine in ENGINES, f"sampling.engine={c.sampling.engine!r}; choose from {ENGINES}")
    need(c.sampling.max_rows >= 0 and c.sampling.kv_cache_gib >= 0, "sampling.max_rows and kv_cache_gib must be >= 0")
    need(
        c.sampling.temperature > 0,
        f"sampling.temperature={c.sampling.temperature}: training needs > 0 (greedy decoding, 0, is not a "
        "distribution: the update's log pi(token) = log_softmax(logits / temperature) is undefined)",
    )
    need(isinstance(c.loss.recompute_old_logprobs, bool), "loss.recompute_old_logprobs must be true or false")
    need(
        _dtype_name(c.sampling.cache_dtype or c.model.compute_dtype) == _dtype_name(c.model.compute_dtype)
        or c.sampling.allow_cache_dtype_mismatch,
        f"sampling.cache_dtype={c.sampling.cache_dtype!r} differs from model.compute_dtype="
        f"{c.model.compute_dtype!r}: the sampled (behaviour) policy would not be the trained policy; set them "
        "equal, or sampling.allow_cache_dtype_mismatch=True to accept it",
    )


def _dtype_name(name: str) -> str:
    import jax.numpy as jnp

    try:
        return jnp.dtype(name).name
    except TypeError:
        raise ConfigError(f"bad config: unknown dtype {name!r}") from None


def build(config):
    """Mesh, model (loaded straight into its shardings), tokenizer and sampler."""
    from azr_jax import storage
    from azr_jax.formats import load_hf_checkpoint, load_tokenizer
    from azr_jax.model import init_model, make_mesh, preset
    from azr_jax.sampling import Sampler
    from azr_jax.selfplay import check_microbatch

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
        model, tokenizer, cache_dtype=s.cache_dtype, max_rows=s.max_rows, kv_cache_gib=s.kv_cache_gib, engine=s.engine
    )
    return mesh, model, tokenizer, sampler


def validate(sampler, tokenizer, pool, config, log) -> dict[str, float]:
    """Greedy CRUXEval-O (deduction) and CRUXEval-I (abduction) on the first `eval.limit` problems."""
    from azr_jax.evaluation import evaluate

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


def train(config, workdir: str, log=print) -> dict[str, float]:
    """Runs (or resumes) self-play until `config.total_steps`; returns the last step's metrics."""
    import jax
    from flax import nnx

    from azr_jax import distributed, proposal_log, storage
    from azr_jax.buffers import TaskBuffers
    from azr_jax.checkpointing import Checkpointer
    from azr_jax.formats import export_hf
    from azr_jax.executor import ExecutorPool
    from azr_jax.metrics import MetricsWriter, group_table
    from azr_jax.selfplay import SelfPlay

    check_config(config)
    if config.eval.every_steps:  # validation reads CRUXEval: fail now, not after loading the model
        from azr_jax.evaluation.benchmarks import check_files

        try:
            check_files(["cruxeval_o", "cruxeval_i"], config.data_dir or None)
        except FileNotFoundError as e:
            raise ConfigError(
                f"bad config: validation (eval.every_steps={config.eval.every_steps}) needs the CRUXEval "
                f"files; set data_dir to a directory that has them ('' = the vendored copy) or "
                f"eval.every_steps=0. {e}"
            ) from e
    if distributed.is_primary():
        storage.makedirs(workdir)
        storage.write_text(storage.join(workdir, "config.json"), config.to_json_best_effort(indent=2))
    mesh, model, tokenizer, sampler = build(config)
    log(
        f"model: {config.model.checkpoint or config.model.preset}, {model.cfg.num_params / 1e6:.0f}M parameters, "
        f"mesh {dict(mesh.shape)}" + (f", {jax.process_count()} processes" if jax.process_count() > 1 else "")
    )
    checkpointer = Checkpointer(
        storage.join(workdir, "checkpoints"),
        keep=config.keep_checkpoints,
        save_interval_steps=config.checkpoint_every_steps or 1,
    )
    checkpointer.install_preemption_handler()
    writer = MetricsWriter(
        workdir, total_steps=config.total_steps, proposals_max_mb=config.proposal_log_max_mb, log=log
    )
    metrics: dict[str, float] = {}
    first: dict[str, float] | None = None
    steps_run = 0
    before: dict[str, float] = {}
    with (
        jax.set_mesh(mesh),
        ExecutorPool(num_workers=config.executor.num_workers or None, timeout_s=config.executor.timeout_s) as local,
    ):
        pool = distributed.SpreadPool(local)  # each process runs its share of the jobs; all get every verdict
        selfplay = SelfPlay(config, model, tokenizer, sampler, pool)
        try:
            abstract = jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), selfplay.state()
            )
            restored = checkpointer.restore_latest(abstract)
            if restored:
                start, state, extra = restored
                selfplay.load_state(state)
                selfplay.buffers = TaskBuffers.from_dict(extra["buffers"])
                writer.truncate_after(start)
                log(f"resumed from step {start} (buffers {selfplay.buffers.sizes()})")
            else:
                start = 0
                archive = writer.start_fresh()
                if archive:
                    log(f"no checkpoint to resume: the earlier run's records moved to {archive}")
                t = time.perf_counter()
                selfplay.seed_buffers(log)
                log(f"seeded the buffers in {time.perf_counter() - t:.0f}s: {selfplay.buffers.sizes()}")
                if config.eval.every_steps and config.eval.at_start:
                    before = validate(sampler, tokenizer, pool, config, log)
                    writer.write_scalars(0, before)
            for step in range(start, config.total_steps):
                t = time.perf_counter()
                result = selfplay.train_step(step)
                metrics = result.metrics
                if first is None:  # this run's first step; validation "before" is the one at step 0
                    first = {k: v for k, v in metrics.items() if not k.startswith("validation/")} | before
                done, steps_run = step + 1, steps_run + 1
                if config.eval.every_steps and done % config.eval.every_steps == 0:
                    metrics.update(validate(sampler, tokenizer, pool, config, log))
                writer.write_scalars(done, metrics)
                writer.write_proposals(
                    done,
                    proposal_log.records(
                        done, result.proposals, result.solver, config.answer_format, config.proposal_log_max_chars
                    ),
                )
                if config.log_samples_every_steps and done % config.log_samples_every_steps == 0:
                    writer.write_texts(done, result.texts)
                log(writer.progress_line(done, time.perf_counter() - t, metrics))
                last = done == config.total_steps
                preempted = distributed.any_process(checkpointer.preempted)  # SIGTERM on any host: all stop here
                if config.checkpoint_every_steps or preempted:  # 0: only when preempted
                    checkpointer.save(
                        done,
                        selfplay.state(),
                        {"buffers": selfplay.buffers.to_dict()},
                        force=last or preempted,
                    )
                writer.flush()
                if preempted and not last:
                    log(f"preempted: saved step {done}, exiting")
                    break
            else:
                if config.export_hf_at_end:
                    out = storage.join(workdir, "hf", f"step_{config.total_steps}")
                    nnx.update(model, selfplay.params)
                    export_hf(model, tokenizer, out)  # every process gathers, process 0 writes
                    log(f"exported {out}")
        finally:
            checkpointer.wait()
            checkpointer.close()
            writer.close()
    if first is not None and steps_run == 1 and not before:
        log(f"\nper group, step {done} (the only step of this run):\n" + group_table(None, metrics))
    elif first is not None:
        log("\nper group, first step -> last step of this run:\n" + group_table(first, metrics))
    log(f"TensorBoard: tensorboard --logdir {storage.join(workdir, 'tensorboard')}")
    log(f"every proposal, the curves and the map of programs: python -m azr_jax.report --workdir {workdir}")
    return metrics
