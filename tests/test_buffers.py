import json

import numpy as np
import pytest

from azr_jax.buffers import SOLVE_PREVIOUS, TaskBuffers, seed_key, seed_size, strip_program
from azr_jax.tasks import SEED_PROGRAM, Task, TaskType, seed_task


def ded(i):
    return Task("deduction", f"def f(a):\n    return a + {i}", (str(i),), (str(2 * i),))


def abd(i):
    return Task("abduction", f"def f(a):\n    return a * {i}", (str(i),), (str(i * i),))


def filled(n=20):
    b = TaskBuffers.seeded()
    b.add("deduction", [ded(i) for i in range(n)])
    b.add("abduction", [abd(i) for i in range(n)] + [Task("abduction", ded(0).program, ("1",), ("1",))])
    b.add("induction", [Task("induction", ded(1).program, tuple("0123456789"), tuple("123456789a"), "add")])
    return b


def test_seeding():
    b = TaskBuffers.seeded()
    assert b.sizes() == {"deduction": 1, "abduction": 1, "induction": 0}
    t = b.tasks[TaskType.DEDUCTION][0]
    assert t == seed_task("deduction")
    assert t.program == "def f(a):\n    return a" and t.input == '"Hello World"'
    assert eval(t.output) == eval(t.input) == "Hello World"
    assert b.induction_programs() == [SEED_PROGRAM]


def test_references_without_replacement_and_same_type():
    b = filled()
    refs = b.sample_references("deduction", 6, np.random.default_rng(0))
    assert len(refs) == 6 and len(set(refs)) == 6
    assert all(r.task_type == TaskType.DEDUCTION for r in refs)
    small = TaskBuffers.seeded()
    assert small.sample_references("abduction", 6, np.random.default_rng(0)) == [seed_task("abduction")]


def test_references_uniform():
    b = filled(9)  # 10 deduction tasks
    rng = np.random.default_rng(1)
    counts = {}
    for _ in range(2000):
        for r in b.sample_references("deduction", 3, rng):
            counts[r.program] = counts.get(r.program, 0) + 1
    assert len(counts) == 10
    assert max(counts.values()) < 1.25 * 600 and min(counts.values()) > 0.75 * 600


def test_sampling_is_deterministic():
    b = filled()
    a1 = b.sample_references("deduction", 6, np.random.default_rng(42))
    a2 = b.sample_references("deduction", 6, np.random.default_rng(42))
    a3 = b.sample_references("deduction", 6, np.random.default_rng(43))
    assert a1 == a2 and a1 != a3
    s1 = b.solver_tasks("abduction", 64, np.random.default_rng(7))
    assert s1 == b.solver_tasks("abduction", 64, np.random.default_rng(7))
    p1 = b.sample_induction_programs(8, np.random.default_rng(3))
    assert p1 == b.sample_induction_programs(8, np.random.default_rng(3))


def test_induction_programs_union_of_deduction_and_abduction():
    b = filled(5)
    programs = b.induction_programs()
    expected = {SEED_PROGRAM} | {ded(i).program for i in range(5)} | {abd(i).program for i in range(5)}
    assert set(programs) == expected and len(programs) == len(expected)  # duplicates removed
    drawn = b.sample_induction_programs(len(expected), np.random.default_rng(0))
    assert set(drawn) == expected  # without replacement while enough
    many = b.sample_induction_programs(50, np.random.default_rng(0))
    assert len(many) == 50 and set(many) <= expected


def test_solver_tasks_current_step_filled_from_buffer():
    b = filled(30)
    step = [ded(100 + i) for i in range(5)]
    b.add("deduction", step)
    tasks = b.solver_tasks("deduction", 16, np.random.default_rng(0))
    assert len(tasks) == 16 and tasks[:5] == step
    assert all(t in b.tasks[TaskType.DEDUCTION] for t in tasks[5:])
    assert len(set(tasks[5:])) == 11  # fill drawn without replacement when the buffer is big enough


def test_solver_tasks_truncate_and_small_buffer():
    b = TaskBuffers.seeded()
    b.add("deduction", [ded(i) for i in range(10)])
    assert b.solver_tasks("deduction", 4, np.random.default_rng(0)) == [ded(i) for i in range(4)]
    b.add("deduction", [])
    tasks = b.solver_tasks("deduction", 30, np.random.default_rng(0))
    assert len(tasks) == 30 and set(tasks) <= set(b.tasks[TaskType.DEDUCTION])
    assert TaskBuffers.empty().solver_tasks("induction", 8, np.random.default_rng(0)) == []


def test_solver_tasks_previous_step():
    b = TaskBuffers.seeded()
    first, second = [ded(i) for i in range(3)], [ded(10 + i) for i in range(2)]
    b.add("deduction", first)
    b.add("deduction", second)
    assert b.step_proposals("deduction") == second
    assert b.step_proposals("deduction", SOLVE_PREVIOUS) == first
    tasks = b.solver_tasks("deduction", 5, np.random.default_rng(0), proposals=SOLVE_PREVIOUS)
    assert tasks[:3] == first and len(tasks) == 5
    with pytest.raises(ValueError):
        b.step_proposals("deduction", "next")


def test_add_checks_type():
    with pytest.raises(ValueError):
        TaskBuffers.seeded().add("deduction", [abd(1)])


def test_serialisation_round_trip():
    b = filled()
    b.add("deduction", [ded(50)])
    d = json.loads(json.dumps(b.to_dict()))
    restored = TaskBuffers.from_dict(d)
    assert restored == b
    assert restored.step_proposals("deduction") == [ded(50)]
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    assert restored.solver_tasks("deduction", 10, rng_a) == b.solver_tasks("deduction", 10, rng_b)


def test_task_round_trip_and_validation():
    t = Task("induction", "def f(a):\n    return a", ("1", "'x'"), ("1", "'x'"), "identity")
    assert Task.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    with pytest.raises(ValueError):
        Task("deduction", "def f(a): return a", ("1", "2"), ("1",))


COMMENTED = '''"""Module docstring."""
def f(x):
    """Doubles x: f(3) == 6."""
    # the answer is 6
    y = x*2   # double it
    "a string used as a comment"
    return y
'''


def test_strip_program_removes_comments_docstrings_and_formatting():
    stripped = strip_program(COMMENTED)
    assert stripped == "def f(x):\n    y = x * 2\n    return y"
    assert strip_program(stripped) == stripped  # idempotent
    assert strip_program("def f(x):\n\n    return  x*2  # hint") == strip_program("def f(x): return x * 2")
    # a body left empty keeps a statement; strings that are values stay
    assert strip_program('def f(x):\n    """only a docstring"""') == "def f(x):\n    pass"
    assert strip_program("def f(x):\n    return '# not a comment'") == "def f(x):\n    return '# not a comment'"
    with pytest.raises(SyntaxError):
        strip_program("def f(:")


def test_seed_key_modes():
    a = Task("deduction", COMMENTED, ("3",), ("6",))
    a_abduction = Task("abduction", "def f(x):\n    y = x * 2\n    return y", (" 3 ",), ("6",))
    a_other_input = Task("deduction", COMMENTED, ("4",), ("8",))
    assert seed_key(a, "program") == seed_key(a_abduction, "program") == seed_key(a_other_input, "program")
    assert seed_key(a, "triplet") == seed_key(a_abduction, "triplet") != seed_key(a_other_input, "triplet")
    assert seed_key(a, "none") is None
    ind = Task("induction", COMMENTED, tuple("0123456789"), tuple("0123456789"), "m")
    assert seed_key(ind, "program") == seed_key(ind, "triplet") != seed_key(a, "triplet")
    with pytest.raises(ValueError):
        seed_key(a, "loose")


def test_seed_size_derived_from_batch():
    assert seed_size(0, 64) == 256 and seed_size(0, 16) == 64 and seed_size(5, 64) == 5
