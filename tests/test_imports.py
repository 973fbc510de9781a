"""No import cycles among azr_jax's modules, imports inside functions included.

A function-level import does not break a cycle, it only hides it: the two modules still need each other,
and which one happens to be imported first decides whether a name exists yet. So every import statement
counts, wherever it is. The graph is read from the source with `ast` (nothing is imported):

- `import a.b.c` and `from a.b.c import x` depend on `a.b.c`; `from a.b import c` depends on the submodule
  `a.b.c` when there is one, else on the package `a.b` (its `__init__`); relative imports are resolved
  against the importing module's package.
- Importing `a.b.c` runs the `__init__` of `a` and `a.b` first, so those count too, except for the
  importer's own packages: Python has run (or is running) those before the importer, and a package's
  `__init__` importing its own submodules is the normal layout, not a cycle. An explicit import of one's own
  package (`from a.b import name` inside `a.b.c`, with `name` defined in `a/b/__init__.py`) does count.
"""

import ast
import collections
import os

import azr_jax

ROOT = os.path.dirname(azr_jax.__file__)


def module_files(root: str, package: str) -> dict[str, str]:
    """Module name -> path of every .py file under `root`, the directory of `package`."""
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        rel = os.path.relpath(folder, root)
        parts = [package] if rel == "." else [package, *rel.split(os.sep)]
        for f in sorted(files):
            if f.endswith(".py"):
                name = parts if f == "__init__.py" else [*parts, f[:-3]]
                out[".".join(name)] = os.path.join(folder, f)
    return out


def ancestors(module: str) -> list[str]:
    """'a.b.c' -> ['a', 'a.b']."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(root: str, package: str) -> dict[tuple[str, str], int]:
    """(importer, imported) -> line of the first import statement behind that edge, among `package`'s modules."""
    files = module_files(root, package)
    packages = {m for m, path in files.items() if path.endswith("__init__.py")}
    edges: dict[tuple[str, str], int] = {}

    def add(src: str, dst: str, line: int) -> None:
        own = {src, *ancestors(src)}
        for implicit in ancestors(dst):  # the package __init__s that importing dst runs first
            if implicit in files and implicit not in own:
                edges.setdefault((src, implicit), line)
        if dst in files and dst != src:
            edges.setdefault((src, dst), line)

    for module, path in files.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        here = module if module in packages else module.rpartition(".")[0]  # the package relative imports start at
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(module, alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    add(module, sub if sub in files else target, node.lineno)
    return edges


def tangles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm): each is one or more
    cycles, and every module in it imports every other, directly or not."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return sorted(components, key=min)


def shortest_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """The shortest cycle (its first node repeated at the end) through a tangle's first node by name, found by
    breadth-first search inside the tangle: one concrete path to read, not the whole tangle."""
    start = min(component)
    came_from = {start: None}
    queue = collections.deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph.get(v, ())):
            if w == start:
                path = [v]
                while came_from[path[-1]] is not None:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if w in component and w not in came_from:
                came_from[w] = v
                queue.append(w)
    raise AssertionError(f"{component} is not strongly connected")


def describe(graph: dict[str, set[str]], component: set[str], edges: dict[tuple[str, str], int]) -> str:
    """A tangle as its shortest cycle with the line of each import ('a:3 -> b:12 -> a'), and the tangle's
    other modules if it has more."""
    cycle = shortest_cycle(graph, component)
    text = " -> ".join(f"{a}:{edges[a, b]}" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"
    others = sorted(component - set(cycle))
    return text + (f" (the same tangle holds {', '.join(others)})" if others else "")


def graph_of(edges) -> dict[str, set[str]]:
    graph = collections.defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    return graph


def test_tangles_and_cycles_of_a_synthetic_graph():
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a", "h"}, "d": set(), "e": {"f"}, "f": {"e"}, "g": {"a"}, "h": {"b"}}
    assert tangles(graph) == [{"a", "b", "c", "h"}, {"e", "f"}]
    assert shortest_cycle(graph, {"a", "b", "c", "h"}) == ["a", "b", "c", "a"]
    assert tangles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_graph_sees_function_level_relative_and_submodule_imports(tmp_path):
    """A throwaway package: one cycle through an import inside a function, one through a package whose
    submodule imports a name from the package's own __init__."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "other").mkdir()
    sources = {
        "__init__.py": "",
        "a.py": "from pkg import b\n",
        "b.py": "def f():\n    from pkg.sub.c import g\n    return g\n",
        "sub/__init__.py": "from .c import g\n",
        "sub/c.py": "import os\n\n\ndef g():\n    from .. import a\n    return a\n",
        "d.py": "from pkg.sub import c\nimport pkg.a\n",
        "other/__init__.py": "from .e import h\nNAME = 1\n",
        "other/e.py": "def h():\n    from pkg.other import NAME\n    return NAME\n",
    }
    for name, text in sources.items():
        (pkg / name).write_text(text)
    edges = import_graph(str(pkg), "pkg")
    assert set(edges) == {
        ("pkg.a", "pkg.b"),
        ("pkg.b", "pkg.sub.c"),
        ("pkg.b", "pkg.sub"),  # importing pkg.sub.c runs pkg/sub/__init__.py
        ("pkg.sub", "pkg.sub.c"),
        ("pkg.sub.c", "pkg.a"),
        ("pkg.d", "pkg.sub.c"),
        ("pkg.d", "pkg.sub"),
        ("pkg.d", "pkg.a"),
        ("pkg.other", "pkg.other.e"),
        ("pkg.other.e", "pkg.other"),
    }
    graph = graph_of(edges)
    found = tangles(graph)
    assert found == [{"pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c"}, {"pkg.other", "pkg.other.e"}]
    assert [describe(graph, c, edges) for c in found] == [
        "pkg.a:1 -> pkg.b:2 -> pkg.sub.c:5 -> pkg.a (the same tangle holds pkg.sub)",
        "pkg.other:1 -> pkg.other.e:2 -> pkg.other",
    ]


def test_azr_jax_has_no_import_cycles():
    edges = import_graph(ROOT, "azr_jax")
    assert ("azr_jax.sampling.sampler", "azr_jax.sampling.continuous") in edges  # the walk does see the package
    graph = graph_of(edges)
    found = tangles(graph)
    report = "\n".join(describe(graph, c, edges) for c in found)
    assert not found, f"import cycles (module:line of the import):\n{report}"


STEP_MODULES = ("selfplay", "phases", "seeding", "learner", "rollouts", "step_metrics", "settings")


def test_the_step_reads_in_one_sitting():
    """The step's modules stay small functions over plain data (WORKSPACE.md, "One step"): no function over
    70 lines, no class over 60, and the self-play module is the step and nothing else (no class but its
    result and clock)."""
    too_long = []
    for name in STEP_MODULES:
        with open(os.path.join(ROOT, f"{name}.py")) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            limit = {ast.FunctionDef: 70, ast.ClassDef: 60}.get(type(node))
            if limit and node.end_lineno - node.lineno + 1 > limit:
                too_long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines (at most {limit})")
        if name == "selfplay":
            classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
            assert classes <= {"StepResult", "_Laps"}, classes
    assert not too_long, "\n".join(too_long)
