"""The package's layout (docs/architecture.md): layers that only import downwards, no import
cycle, no module over 700 lines, no module named for when its contents were published.

Every ``import`` and ``from ... import`` of lfsearch modules is read from the source (module
level and inside functions alike), so a lazy import cannot hide a cycle."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lfsearch"

#: Lowest first. A module may import its own layer's package and any lower layer, never a
#: higher one; packages on one layer (losses, data, models) do not import each other.
LAYERS = [
    ["lfsearch.paths"],
    ["lfsearch.losses", "lfsearch.data", "lfsearch.models"],
    ["lfsearch.evaluation"],
    ["lfsearch.search"],
    ["lfsearch.experiments"],
    ["lfsearch.report"],
    ["lfsearch.cli"],
    ["lfsearch.__main__"],
]
MAX_LINES = 700


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The lfsearch modules `path` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    out = set()
    me = module_name(path)
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known
                     else node.module for a in node.names]
        for name in names:
            if not name.startswith("lfsearch"):
                continue
            while name not in known and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in known and name != me and name != "lfsearch":
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports_of(p, set(mods)) for m, p in mods.items()}


def layer_of(module: str) -> tuple[int, str]:
    for i, layer in enumerate(LAYERS):
        for top in layer:
            if module == top or module.startswith(top + "."):
                return i, top
    raise AssertionError(f"{module} belongs to no layer of LAYERS; add it there")


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    colour = {m: 0 for m in g}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        colour[m] = 1
        stack.append(m)
        for n in sorted(g.get(m, ())):
            if n == m or n not in colour:
                continue
            if colour[n] == 1:
                return stack[stack.index(n):] + [n]
            if colour[n] == 0:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        colour[m] = 2
        return None

    for m in sorted(g):
        if colour[m] == 0:
            found = visit(m)
            if found:
                return found
    return None


def test_every_module_is_in_a_layer_and_imports_only_downwards():
    g = graph()
    bad = []
    for m, deps in g.items():
        if m == "lfsearch":
            continue
        mine, my_top = layer_of(m)
        for d in deps:
            theirs, their_top = layer_of(d)
            if theirs > mine or (theirs == mine and their_top != my_top):
                bad.append(f"{m} (layer {mine}) imports {d} (layer {theirs})")
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_sees_a_cycle_and_a_violation():
    # the checks above must be able to fail: a hand-made cycle and an upward import
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert layer_of("lfsearch.losses.base")[0] < layer_of("lfsearch.search.loop")[0]


def test_modules_are_short_and_named_for_what_they_hold():
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
    dated = [m for m in modules() if "recent" in m.rsplit(".", 1)[-1]]
    assert not dated, f"modules named for when, not what: {dated}"
