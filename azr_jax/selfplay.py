"""The AZR self-play loop: propose -> validate -> learnability -> solve -> check -> TRR++ update.

One `SelfPlay` owns the model (one copy of the weights, used by the sampler and the update step),
the executor pool, the task buffers, the checkpointer and the metrics writer. `train_step` is one
step of docs/algorithm.md sections 1-7; the host-side phases (prompting, parsing, executing, rewarding) are
small methods so a scripted policy can drive them in tests. Executor work is overlapped with
sampling where the data allows: the learnability rollouts are checked in a background thread while
the solver samples.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import functools
import logging
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from azr_jax import distributed, parsing, prompts, rewards
from azr_jax.advantages import trr_advantages
from azr_jax.buffers import TaskBuffers, seed_key, seed_size, strip_program
from azr_jax.executor import ExecutorPool, Reason
from azr_jax.model import batch_split, logical_sharding
from azr_jax.sampling import Samples, SamplingParams
from azr_jax.sampling.sampler import StopString
from azr_jax.trainer import ConfigError
from azr_jax.tasks import NUM_GROUPS, NUM_INDUCTION_SHOWN, Role, Task, TaskType, ast_size, group_id, group_name
from azr_jax.update import UpdateConfig, init_optimizer_state, make_optimizer, pack_rows, update_step

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Rollout:
    """One sampled response: what the update step trains on, plus what the metrics describe."""

    task_type: TaskType
    role: Role
    prompt_ids: list[int]
    tokens: np.ndarray  # response token ids (the stop token included)
    logprobs: np.ndarray
    text: str
    truncated: bool  # hit max_response_tokens
    well_formatted: bool = False
    valid: bool = False  # proposer: the executor accepted the task; solver: the answer is correct
    reason: str = ""
    solve_rate: float = 0.0  # proposer: learnability rollouts' mean correctness (NaN: none counted)
    task: Task | None = None  # proposer: the validated task; solver: the task solved
    context: object = None  # proposer: the reference tasks shown (deduction/abduction) or the program (induction)
    answers: list = dataclasses.field(default_factory=list)  # proposer: (answer, correct) of each learnability rollout
    reward: float = 0.0


@dataclasses.dataclass
class StepResult:
    metrics: dict[str, float]
    texts: dict[str, str]  # one sampled response per group, for TensorBoard
    proposals: list[Rollout]
    solver: list[Rollout]


def _ast_profile(program: str) -> collections.Counter:
    try:
        return collections.Counter(type(n).__name__ for n in ast.walk(ast.parse(program)))
    except (SyntaxError, ValueError):
        return collections.Counter()


def diversity(program: str, references: Sequence[Task]) -> float:
    """1 - the largest AST node-type overlap (weighted Jaccard) with any reference program."""
    mine = _ast_profile(program)
    best = 0.0
    for ref in references:
        other = _ast_profile(ref.program)
        union = sum((mine | other).values())
        best = max(best, sum((mine & other).values()) / union if union else 1.0)
    return 1.0 - best


def learnability_solve_rate(checks: Sequence[tuple[bool, bool, str]]) -> float:
    """s of one proposal from the (well_formatted, correct, reason) checks of its N rollouts.

    docs/algorithm.md section 4: a malformed rollout counts as incorrect, and so does any answer the
    sandbox rejects (runtime error, timeout, ...); only a check that failed for infrastructure reasons
    (`sandbox_error`: the executor itself, not the answer) is left out of the mean. NaN when every
    rollout is left out: `rewards.learnability_reward` then gives `extreme_solve_rate_reward`.
    """
    correct = [ok for _, ok, _ in checks]
    counted = [reason != Reason.SANDBOX_ERROR.value for _, _, reason in checks]
    return float(rewards.solve_rate(correct, counted))


def optimizer_from(config: ml_collections.ConfigDict):
    c = config.optimizer
    return make_optimizer(c.learning_rate, c.b1, c.b2, c.weight_decay, c.grad_clip)


def update_config_from(config: ml_collections.ConfigDict) -> UpdateConfig:
    return UpdateConfig(
        clip_low=config.loss.clip_low,
        clip_high=config.loss.clip_high,
        entropy_coef=config.loss.entropy_coef,
        kl_coef=config.loss.kl_coef,
        microbatch_size=config.optimizer.microbatch_size,
        logit_chunk=min(config.logit_chunk, config.max_response_tokens),
        temperature=config.sampling.temperature,
        recompute_old_logprobs=config.loss.recompute_old_logprobs,
    )


def check_microbatch(config: ml_collections.ConfigDict, mesh) -> None:
    """A microbatch's rows are split over the batch mesh axes; one they do not divide would be replicated."""
    size, split = config.optimizer.microbatch_size, batch_split(mesh)
    if size % split:
        raise ConfigError(
            f"bad config: optimizer.microbatch_size={size} is not a multiple of the mesh's batch axes "
            f"(mesh.data x mesh.fsdp = {split}): its rows would be replicated on every device, not split"
        )


class SelfPlay:
    """Trains one policy as proposer and solver. `sampler` is anything with `generate(ids, params, seed)`."""

    def __init__(self, config: ml_collections.ConfigDict, model, tokenizer, sampler, pool: ExecutorPool):
        self.config, self.tokenizer, self.sampler, self.pool = config, tokenizer, sampler, pool
        self.task_types = [TaskType(t) for t in config.task_types]
        self.strictness = config.answer_format
        self.graphdef, self.params = nnx.split(model)
        mesh = getattr(jax.tree.leaves(self.params)[0].sharding, "mesh", None)
        check_microbatch(config, mesh)
        self.batch_sharding = None if mesh is None else logical_sharding(("batch", None), mesh)
        self.optimizer = optimizer_from(config)
        self.opt_state = init_optimizer_state(self.optimizer, self.params)
        self.ref_params = jax.tree.map(jnp.copy, self.params) if config.loss.kl_coef else None
        self.update_config = update_config_from(config)
        self.key = jax.random.key(config.seed)
        if mesh is not None:  # one global key, replicated: every process draws the same samples
            replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
            self.key = jax.random.wrap_key_data(distributed.put(np.asarray(jax.random.key_data(self.key)), replicated))
        self.buffers = TaskBuffers.seeded()
        self.dropped_prompts: collections.Counter[str] = collections.Counter()  # group -> prompts too long, this step

    # ----------------------------------------------------------------------------------- sampling

    def render(self, prompt_text: str) -> list[int]:
        """All token ids of one wrapped prompt, never truncated (see `_fitting`)."""
        text = prompts.render(prompt_text, self.config.template, self.tokenizer)
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def _fitting(self, items: list[tuple], task_types: Sequence[TaskType], role: Role) -> list[tuple]:
        """The (prompt ids, ...) items whose prompt has at most `max_prompt_tokens` tokens; the others are
        dropped and counted in `dropped_prompts` under the group of their task type (docs/algorithm.md
        section 2.1). Dropping, as the reference code does, instead of cutting the prompt: either end
        of a prompt holds something the model needs (the wrapper's start, the task's instructions)."""
        kept = []
        for item, task_type in zip(items, task_types):
            if len(item[0]) <= self.config.max_prompt_tokens:
                kept.append(item)
            else:
                self.dropped_prompts[group_name(group_id(task_type, role))] += 1
        return kept

    @functools.cached_property
    def stop_string(self) -> StopString:
        return prompts.answer_stop(self.config.template, self.tokenizer)

    def sample(self, prompt_ids: list[list[int]], n: int, seed: jax.Array, temperature: float | None = None) -> Samples:
        c = self.config.sampling
        params = SamplingParams(
            max_new_tokens=self.config.max_response_tokens,
            temperature=c.temperature if temperature is None else temperature,
            top_p=c.top_p,
            top_k=c.top_k,
            n=n,
            stop_strings=(self.stop_string,),
        )
        return self.sampler.generate(prompt_ids, params, seed)

    @staticmethod
    def _rollout(samples: Samples, i: int, task_type: TaskType, role: Role, prompt_ids: list[int]) -> Rollout:
        """Row i of a sampler call (n = 1) as a Rollout."""
        k = samples.lengths[i]
        return Rollout(
            task_type,
            role,
            prompt_ids,
            samples.tokens[i, :k],
            samples.logprobs[i, :k],
            samples.texts[i],
            truncated=not samples.done[i],
        )

    # --------------------------------------------------------------------------------- proposing

    def proposer_prompts(self, task_type: TaskType, count: int, rng: np.random.Generator):
        """(prompt ids, references or program) for `count` proposer prompts of one task type, less those
        longer than `max_prompt_tokens` (dropped and counted, `_fitting`)."""
        out = []
        shape = dict(example=self.config.proposer_example, calls=self.strictness == parsing.LENIENT)
        if task_type == TaskType.INDUCTION:
            for program in self.buffers.sample_induction_programs(count, rng):
                out.append((self.render(prompts.proposer_prompt(task_type, program=program, **shape)), program))
        else:
            k = self.config.num_references if self.config.use_references else 0
            for _ in range(count):
                refs = self.buffers.sample_references(task_type, k, rng) if k else []
                out.append((self.render(prompts.proposer_prompt(task_type, references=refs, **shape)), refs))
        return self._fitting(out, [task_type] * len(out), Role.PROPOSER)

    def propose(self, task_types, rng: np.random.Generator, key, count: int | None = None) -> list[Rollout]:
        """`count` (default B) proposer prompts per task type (fewer when some are too long), sampled in one call.

        Proposing starts every step and every seeding round, so it also resets `dropped_prompts`."""
        self.dropped_prompts.clear()
        count = count or self.config.batch_size
        flat = [(t, ids, ctx) for t in task_types for ids, ctx in self.proposer_prompts(t, count, rng)]
        if not flat:
            return []
        samples = self.sample([ids for _, ids, _ in flat], 1, key)
        rollouts = []
        for i, (t, ids, ctx) in enumerate(flat):
            r = self._rollout(samples, i, t, Role.PROPOSER, ids)
            r.context = ctx
            rollouts.append(r)
        return rollouts

    def validate(self, rollouts: list[Rollout]) -> None:
        """Parses proposals and runs the executor's checks; fills well_formatted / valid / task.

        Every (program, input) pair of the step, induction inputs included, goes to the pool in one
        call, so the workers share the whole batch.
        """
        parsed_ok, pairs = [], []
        for r in rollouts:
            induction = r.task_type == TaskType.INDUCTION
            parse = parsing.parse_induction_proposal if induction else parsing.parse_program_proposal
            parsed = parse(r.text, self.strictness)
            r.well_formatted, r.reason = parsed.well_formatted, parsed.reason or ""
            if parsed.well_formatted:
                program, inputs = (r.context, parsed.inputs) if induction else (parsed.program, (parsed.input,))
                parsed_ok.append((r, parsed, len(pairs), len(inputs)))
                pairs += [(program, inp) for inp in inputs]
        verdicts = self.pool.validate_proposals(pairs) if pairs else []
        for r, parsed, start, count in parsed_ok:
            mine = verdicts[start : start + count]
            bad = [v for v in mine if not v.ok]
            r.valid = not bad
            r.reason = bad[0].reason.value if bad else Reason.OK.value
            if r.valid and r.task_type == TaskType.INDUCTION:
                outputs = tuple(v.output for v in mine)
                r.task = Task(TaskType.INDUCTION, r.context, tuple(parsed.inputs), outputs, parsed.message)
            elif r.valid:
                r.task = Task(r.task_type, parsed.program, (parsed.input,), (mine[0].output,))

    # --------------------------------------------------------------------------------- solving

    def check_answers(
        self, tasks: Sequence[Task], texts: Sequence[str], strictness: str | None = None
    ) -> list[tuple[bool, bool, str]]:
        """(well_formatted, correct, reason) of each solver response; nothing the model wrote is eval-ed here.

        `strictness` defaults to the configured `answer_format`. The run's pool spreads the jobs over processes."""
        strictness = strictness or self.strictness
        pool = self.pool
        results: list[tuple[bool, bool, str] | None] = [None] * len(tasks)
        jobs = collections.defaultdict(list)
        for i, (task, text) in enumerate(zip(tasks, texts)):
            answer = parsing.parse_solver(text, task.task_type, strictness)
            if not answer.well_formatted:
                results[i] = (False, False, answer.reason or "format")
                continue
            if task.task_type == TaskType.DEDUCTION:
                jobs[task.task_type].append((i, (task.output, answer.answer)))
            elif task.task_type == TaskType.ABDUCTION:
                jobs[task.task_type].append((i, (task.program, task.output, answer.answer)))
            else:
                hidden = list(zip(task.inputs[NUM_INDUCTION_SHOWN:], task.outputs[NUM_INDUCTION_SHOWN:]))
                jobs[task.task_type].append((i, (answer.answer, hidden)))
        check = {
            TaskType.DEDUCTION: pool.check_deduction,
            TaskType.ABDUCTION: pool.check_abduction,
            TaskType.INDUCTION: pool.check_induction,
        }
        for task_type, items in jobs.items():
            for (i, _), verdict in zip(items, check[task_type]([item for _, item in items])):
                results[i] = (True, verdict.ok, verdict.reason.value)
        return results

    def learnability_solve_rates(self, tasks: Sequence[Task], texts: Sequence[str], n: int) -> list:
        """(s, [(answer, correct)] * n) of each task from its n learnability rollouts (texts task-major, n per
        task); the answers are kept for the proposal log.

        The rollouts are parsed like the trained solver's responses (`answer_format`), unless
        `rewards.learnability_format_check` is false: then without the wrapper check
        (`answer_blocks`), close to the reference code. See `learnability_solve_rate`."""
        strictness = self.strictness if self.config.rewards.learnability_format_check else parsing.ANSWER_BLOCKS
        flat = [t for t in tasks for _ in range(n)]
        checks = self.check_answers(flat, texts, strictness)
        answers = [
            (parsing.parse_solver(x, t.task_type, strictness).answer, c[1]) for t, x, c in zip(flat, texts, checks)
        ]
        return [
            (learnability_solve_rate(checks[j * n : (j + 1) * n]), answers[j * n : (j + 1) * n])
            for j in range(len(tasks))
        ]

    def solver_prompt_ids(self, tasks: Sequence[Task]) -> list[list[int]]:
        """One prompt per task, whatever its length (`solver_prompts` drops the ones that are too long)."""
        return [self.render(prompts.solver_prompt(t)) for t in tasks]

    def solver_prompts(self, tasks: Sequence[Task]) -> tuple[list[Task], list[list[int]]]:
        """(tasks, prompt ids) of the solver prompts with at most `max_prompt_tokens` tokens: a task whose
        prompt is longer is skipped for this step and counted (`_fitting`), not replaced."""
        items = list(zip(self.solver_prompt_ids(tasks), tasks))
        kept = self._fitting(items, [t.task_type for t in tasks], Role.SOLVER)
        return [t for _, t in kept], [ids for ids, _ in kept]

    # ------------------------------------------------------------------------------------ seeding

    def seed_buffers(self, log_fn=print) -> None:
        """The seeding phase (docs/algorithm.md section 6): the model proposes, round after round and with
        no updates, until every buffer in play holds `seed_size` tasks; at most `seed_max_rounds` rounds for the
        deduction/abduction pool and as many again for induction, so induction is always tried. A round
        proposes `seed_batch_size` (default B) prompts per missing task type (on the 2-core CPU, 6 per type
        made a round ~30% slower than 4: rows are not free there).

        Deduction and abduction share one pool: the valid proposals of both proposer types go, in proposal
        order, into both buffers (each kept in the same order), so references come from the same pool and
        both buffers fill twice as fast. A proposal that duplicates a seed already held (`seed_key`,
        `seed_dedup`) is dropped; with `seed_strip_comments` its program is stored stripped of comments and
        docstrings (`strip_program`). Induction seeds are proposed once the deduction/abduction seeds are
        complete (or their rounds are spent), on their programs. Each buffer takes at most the missing number of tasks. Proposals made
        after seeding are never deduplicated or stripped.
        """
        c = self.config
        target = seed_size(c.seed_buffer_size, c.batch_size)
        pooled = [t for t in self.task_types if t != TaskType.INDUCTION]
        held = {t: {seed_key(x, c.seed_dedup) for x in self.buffers.tasks[t]} for t in self.task_types}

        def short(types):
            return [t for t in types if len(self.buffers.tasks[t]) < target]

        induction = [t for t in self.task_types if t == TaskType.INDUCTION]
        round_ = 0
        # The pool first, then induction on its programs: each phase gets up to seed_max_rounds rounds.
        for phase in (pooled, induction):
            for _ in range(c.seed_max_rounds):
                missing = short(phase)
                if missing == [TaskType.INDUCTION] and not self.buffers.induction_programs():
                    missing = []
                if not missing:
                    break
                self._seeding_round(round_, missing, held, target, log_fn)
                round_ += 1
        left = {t.value: len(self.buffers.tasks[t]) for t in short(self.task_types)}
        if left:
            log_fn(
                f"seeding stopped short of {target} tasks per buffer after {round_} rounds "
                f"(seed_max_rounds={c.seed_max_rounds} per phase): {left}. Training goes on; a buffer with no "
                "tasks gives its task type no solver rollouts. Raise seed_max_rounds or lower seed_buffer_size."
            )

    def _seeding_round(self, round_: int, missing: list[TaskType], held: dict, target: int, log_fn) -> None:
        """One round of seeding proposals for the `missing` buffers, deduplicated against `held`."""
        c = self.config
        rng = np.random.default_rng([c.seed, 1_000_000 + round_])
        key = jax.random.fold_in(self.key, 1_000_000 + round_)
        proposals = self.propose(missing, rng, key, c.seed_batch_size or c.batch_size)
        self.validate(proposals)
        valid = [r.task for r in proposals if r.valid]
        if c.seed_strip_comments and TaskType.INDUCTION not in missing:
            valid = self._stripped(valid)
        keys = [seed_key(task, c.seed_dedup) for task in valid]
        for task_type in missing:
            fresh = []
            for task, key in zip(valid, keys):
                if len(self.buffers.tasks[task_type]) + len(fresh) >= target:
                    break
                if key is None or key not in held[task_type]:
                    held[task_type].add(key)
                    fresh.append(dataclasses.replace(task, task_type=task_type))
            self.buffers.add(task_type, fresh)
        too_long = sum(self.dropped_prompts.values())
        log_fn(
            f"seeding round {round_ + 1}: {len(valid)} valid, buffer sizes {self.buffers.sizes()} (target {target})"
            + (f", {too_long} prompts over max_prompt_tokens dropped" if too_long else "")
        )

    def _stripped(self, tasks: list[Task]) -> list[Task]:
        """Deduction/abduction seed tasks with their programs passed through `strip_program`. A program
        that changed is run again with its input and kept only if it passes with the same output (removing
        a docstring changes `f.__doc__`); the others keep their order."""
        candidates = []
        for task in tasks:
            try:
                candidates.append(dataclasses.replace(task, program=strip_program(task.program)))
            except (SyntaxError, ValueError, RecursionError):
                candidates.append(None)
        changed = [i for i, (x, y) in enumerate(zip(tasks, candidates)) if y is not None and y.program != x.program]
        pairs = [(candidates[i].program, candidates[i].input) for i in changed]
        verdicts = dict(zip(changed, self.pool.validate_proposals(pairs))) if pairs else {}
        return [
            y
            for i, y in enumerate(candidates)
            if y is not None and (i not in verdicts or (verdicts[i].ok and verdicts[i].output == y.output))
        ]

    # --------------------------------------------------------------------------------------- step

    def train_step(self, step: int, *, update: bool = True) -> StepResult:
        """One AZR step: everything of step `step` derives from (config.seed, step), so a resumed run
        repeats it exactly. update=False stops before the optimiser step (to measure rewards only)."""
        c = self.config
        rng = np.random.default_rng([c.seed, step])
        key = jax.random.fold_in(self.key, step)
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name):
            nonlocal clock
            now = time.perf_counter()
            timings[f"time/{name}"] = now - clock
            clock = now

        # 1. Propose: B prompts per task type, one sampler call.
        proposals = self.propose(self.task_types, rng, jax.random.fold_in(key, 0))
        lap("propose")

        # 2. Validate in the executor (docs/algorithm.md section 3).
        self.validate(proposals)
        lap("validate")

        # 3. Learnability and solving share one sampler call, so a CPU pays one decode loop, not two, and
        # an accelerator's queue drains once. Learnability: N answers per valid proposal (not trained on).
        # Solve: this step's valid proposals, filled up to B per task type from the buffer.
        valid = [r for r in proposals if r.valid]
        learn_tasks = [r.task for r in valid] if c.train_proposer else []
        n = c.learnability_rollouts
        for t in self.task_types:
            self.buffers.add(t, [r.task for r in valid if r.task_type == t])
        tasks = [
            task
            for t in self.task_types
            for task in self.buffers.solver_tasks(t, c.batch_size, rng, proposals=c.solver_tasks)
        ]
        tasks, ids = self.solver_prompts(tasks)  # prompts over max_prompt_tokens are skipped and counted
        learn_ids = [p for p in self.solver_prompt_ids(learn_tasks) for _ in range(n)]
        solver: list[Rollout] = []
        if learn_ids or ids:
            samples = self.sample(learn_ids + ids, 1, jax.random.fold_in(key, 1))
            for i, task in enumerate(tasks):
                r = self._rollout(samples, len(learn_ids) + i, task.task_type, Role.SOLVER, ids[i])
                r.task = task
                solver.append(r)
        lap("solve_sample")

        # 4. Check every answer in the executor, spread over the processes.
        for r, (ok_format, correct, reason) in zip(
            solver, self.check_answers([r.task for r in solver], [r.text for r in solver])
        ):
            r.well_formatted, r.valid, r.reason = ok_format, correct, reason
        if learn_tasks:
            rates = self.learnability_solve_rates(learn_tasks, samples.texts[: len(learn_ids)], n)
            for r, (s, answers) in zip(valid, rates):
                r.solve_rate, r.answers = s, answers
        lap("check")

        # 5. Rewards (docs/algorithm.md section 4).
        rc = c.rewards
        if proposals:
            prop_rewards = rewards.proposer_rewards(
                [r.well_formatted for r in proposals],
                [r.valid for r in proposals],
                [r.solve_rate for r in proposals],
                extreme_solve_rate_reward=rc.extreme_solve_rate_reward,
                invalid_reward=rc.invalid_reward,
            )  # no zero_reward: that floor is the solver's table only (docs/algorithm.md section 4)
            for r, x in zip(proposals, prop_rewards):
                r.reward = float(x)
        if solver:
            solve_rewards = rewards.solver_rewards(
                [r.well_formatted for r in solver],
                [r.valid for r in solver],
                invalid_reward=rc.invalid_reward,
                zero_reward=rc.zero_reward,
            )
            for r, x in zip(solver, solve_rewards):
                r.reward = float(x)

        # 6. TRR++ advantages and the update, once every process is known to train on the same batch.
        trained = solver + (proposals if c.train_proposer else [])
        self.check_processes_agree(step, proposals, solver, trained)
        update_metrics = self.update(trained) if update else {}
        lap("update")
        metrics = self.step_metrics(proposals, solver)
        metrics.update(update_metrics)
        metrics.update(timings)
        metrics["time/step"] = sum(timings.values())
        generated = sum(len(r.tokens) for r in proposals + solver)
        metrics["tokens_per_second/sampling"] = generated / max(
            timings["time/propose"] + timings["time/solve_sample"], 1e-9
        )
        return StepResult(metrics, self.text_samples(proposals, solver), proposals, solver)

    def check_processes_agree(self, step: int, proposals, solver, trained) -> None:
        """Every process computed the step's host side itself: compare digests of the rewards, the buffers
        and the trained batch before the update, so a divergence is an error, not silently trained on."""
        if jax.process_count() == 1:
            return
        rollouts = proposals + solver
        distributed.agree(
            f"step {step}",
            rewards=distributed.digest([(r.reward, r.valid, r.well_formatted, r.solve_rate) for r in rollouts]),
            buffers=distributed.digest(self.buffers.to_dict()),
            batch=distributed.digest(*[np.asarray(r.prompt_ids) for r in trained], *[r.tokens for r in trained]),
        )

    def update(self, trained: list[Rollout]) -> dict[str, float]:
        """TRR++ advantages over the six groups, then one optimiser step on every trained sequence, packed
        into microbatches as short as their rows allow (`pack_rows`)."""
        c = self.config
        if not trained:
            return {}
        longest = max(1, max(len(r.tokens) for r in trained))
        mask = np.zeros((len(trained), longest), np.float32)
        for i, r in enumerate(trained):
            mask[i, : len(r.tokens)] = 1.0
        groups = np.array([group_id(r.task_type, r.role) for r in trained], np.int32)
        reward = np.array([r.reward for r in trained], np.float32)
        advantages = np.asarray(
            trr_advantages(
                jnp.asarray(reward),
                jnp.asarray(groups),
                jnp.asarray(mask),
                num_groups=NUM_GROUPS,
                token_weighted=c.advantages.token_weighted,
                eps=c.advantages.eps,
            )
        )
        microbatches = pack_rows(
            [np.asarray(r.prompt_ids, np.int32) for r in trained],
            [r.tokens for r in trained],
            [r.logprobs for r in trained],
            list(advantages),
            size=self.update_config.microbatch_size,
            logit_chunk=self.update_config.logit_chunk,
            max_response_tokens=c.max_response_tokens,
        )
        self.params, self.opt_state, metrics = update_step(
            self.graphdef,
            self.params,
            self.opt_state,
            microbatches,
            optimizer=self.optimizer,
            config=self.update_config,
            ref_params=self.ref_params,
            batch_sharding=self.batch_sharding,
        )
        # The sampler holds the model object: point it at the updated arrays (no copy).
        nnx.update(self.sampler.model, self.params)
        out = {f"optimizer/{k}": float(v) for k, v in distributed.to_host(metrics).items()}
        out["optimizer/learning_rate"] = float(c.optimizer.learning_rate)
        for g in range(NUM_GROUPS):
            sel = [i for i, r in enumerate(trained) if group_id(r.task_type, r.role) == g]
            if sel:
                a = advantages[sel][mask[sel] > 0]
                if a.size:
                    out[f"{group_name(g)}/advantage_mean"] = float(a.mean())
                    out[f"{group_name(g)}/advantage_std"] = float(a.std())
        return out

    # ------------------------------------------------------------------------------------ metrics

    def step_metrics(self, proposals: list[Rollout], solver: list[Rollout]) -> dict[str, float]:
        m: dict[str, float] = {}
        for role, rollouts in ((Role.PROPOSER, proposals), (Role.SOLVER, solver)):
            for t in TaskType:  # all six groups, every step: an empty one logs zeros, a visible gap in TensorBoard
                rs = [r for r in rollouts if r.task_type == t]
                g = group_name(group_id(t, role))
                if not rs:
                    m[f"{g}/count"] = m[f"{g}/reward"] = 0.0
                    m[f"{g}/{'valid_rate' if role == Role.PROPOSER else 'accuracy'}"] = 0.0
                    continue
                lengths = np.array([len(r.tokens) for r in rs])
                m[f"{g}/reward"] = float(np.mean([r.reward for r in rs]))
                m[f"{g}/format_valid"] = float(np.mean([r.well_formatted for r in rs]))
                m[f"{g}/response_length_mean"] = float(lengths.mean())
                m[f"{g}/response_length_max"] = float(lengths.max())
                m[f"{g}/clip_ratio"] = float(np.mean([r.truncated for r in rs]))
                m[f"{g}/count"] = float(len(rs))
                for reason, count in collections.Counter(r.reason or "ok" for r in rs).items():
                    m[f"{g}/reason/{reason}"] = count / len(rs)
                if role == Role.SOLVER:
                    m[f"{g}/accuracy"] = float(np.mean([r.valid for r in rs]))
                    answers = [r.text.split("<answer>")[-1].strip() for r in rs]
                    m[f"{g}/answer_diversity"] = len(set(answers)) / len(answers)
                else:
                    valid = [r for r in rs if r.valid]
                    m[f"{g}/valid_rate"] = len(valid) / len(rs)
                    rates = [r.solve_rate for r in valid if np.isfinite(r.solve_rate)]
                    if rates:
                        m[f"{g}/solve_rate"] = float(np.mean(rates))
                    if valid:
                        m[f"{g}/program_ast_size"] = float(np.mean([ast_size(r.task.program) for r in valid]))
                    if t != TaskType.INDUCTION and valid:
                        m[f"{g}/diversity"] = float(np.mean([diversity(r.task.program, r.context) for r in valid]))
        for t, size in self.buffers.sizes().items():
            m[f"buffer/{t}"] = float(size)
        for t in self.task_types:  # prompts dropped for being over max_prompt_tokens (docs/algorithm.md section 2.1)
            for role in (Role.PROPOSER, Role.SOLVER):
                g = group_name(group_id(t, role))
                m[f"{g}/prompt_too_long"] = float(self.dropped_prompts[g])
        m["prompt_too_long/total"] = float(sum(self.dropped_prompts.values()))
        return m

    def text_samples(self, proposals: list[Rollout], solver: list[Rollout]) -> dict[str, str]:
        out = {}
        for role, rollouts in ((Role.PROPOSER, proposals), (Role.SOLVER, solver)):
            for t in self.task_types:
                rs = [r for r in rollouts if r.task_type == t]
                if rs:
                    r = next((x for x in rs if x.valid), rs[0])
                    out[group_name(group_id(t, role))] = f"reward {r.reward:+.2f} ({r.reason})\n\n{r.text}"
        return out

    # -------------------------------------------------------------------------------- checkpoint

    def state(self) -> dict:
        """What the checkpoint holds besides the buffers. Step t's randomness derives from (key, t)."""
        return {"params": self.params, "opt_state": self.opt_state, "key": self.key}

    def load_state(self, state: dict) -> None:
        self.params, self.opt_state, self.key = state["params"], state["opt_state"], state["key"]
        nnx.update(self.sampler.model, self.params)
