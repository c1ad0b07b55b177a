"""How minineo's modules depend on each other, read from the source (ast), never by importing it:
no import circle, no private name imported across modules, no subpackage importing the package
root, no module swapping its own class, no bare ValueError or RuntimeError raised by our own checks."""
import ast
from pathlib import Path

import minineo

PACKAGE = Path(minineo.__file__).parent


def modules():  # {"minineo.text.harness": Path, ...}; a package is its __init__.py
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["minineo", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name, path, known):
    """(imported module, names taken from it, line) for every import in the file, at any depth
    (an import inside a function is a dependency too). `from . import x` names module x."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[:len(name.split(".")) - node.level + is_package]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            names = [alias.name for alias in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
            yield target, [n for n in names if f"{target}.{n}" not in known], node.lineno
            for submodule in submodules:
                yield submodule, [], node.lineno


def graph():  # {module: {imported minineo module: line}}
    known = modules()
    edges = {name: {} for name in known}
    for name, path in known.items():
        for target, _, line in imports(name, path, known):
            if target in known and target != name:
                edges[name].setdefault(target, line)
    return edges


def find_cycle(edges):  # -> a list of modules [a, b, ..., a], or None
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_minineo_has_no_import_cycle():
    edges = graph()
    cycle = find_cycle(edges)
    shown = " -> ".join(f"{a} (line {edges[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}" if cycle else ""
    assert cycle is None, f"import cycle: {shown}"


def test_the_cycle_finder_finds_a_cycle():   # so that the test above can fail
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}, "c": {"a": 1, "b": 1}}) is None


def test_the_graph_sees_relative_and_lazy_imports():
    edges = graph()
    assert "minineo.errors" in edges["minineo.model.checks"]           # from ..errors import
    assert "minineo.text.distributed" in edges["minineo.text.harness"]    # an import inside a function
    assert "minineo.model.gpt_neo" in edges["minineo.model"]           # a package's __init__


def test_no_private_name_is_imported_across_modules():
    known = modules()
    found = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {n} from {target}"
             for name, path in known.items() for target, names, line in imports(name, path, known)
             for n in names if n.startswith("_") and target.startswith("minineo")]
    assert not found, "\n".join(found)


def test_no_subpackage_imports_the_package_root():
    # the root re-exports from the subpackages, never the other way
    known = modules()
    found = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
             for name, path in known.items() if name.count(".") >= 1 and path.parent != PACKAGE
             for target, _, line in imports(name, path, known) if target == "minineo"]
    assert not found, "\n".join(found)


def test_no_module_swaps_its_class():
    found = [str(path.relative_to(PACKAGE.parent)) for path in modules().values()
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr == "__class__"
                                                     for t in node.targets)]
    assert not found, f"a module's __class__ is assigned in {found}"


BUILTIN_ERRORS = {"ValueError", "RuntimeError", "TypeError", "KeyError", "IndexError", "OSError", "Exception"}


def test_our_checks_raise_minineo_errors():
    # one family for user mistakes (minineo/errors.py); an internal invariant is an assert
    found = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} raises {name}"
             for path in modules().values() for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Raise) and node.exc is not None
             for name in [getattr(getattr(node.exc, "func", node.exc), "id", None)] if name in BUILTIN_ERRORS]
    assert not found, "\n".join(found)


# Who may import whom: a module imports only from its own level or a lower one. The entry points
# (the package root, which re-exports, and the `python -m` shims) sit above everything.
LEVELS = [("errors",), ("model",), ("fast",), ("weights",), ("text", "train"), ("interpret",), ("course",),
          ("commands",)]


def is_shim(path):  # a docstring, `from ...commands.X import main`, and `raise SystemExit(main())` under __main__
    body = ast.parse(path.read_text()).body
    return (len(body) == 3 and isinstance(body[0], ast.Expr) and isinstance(body[1], ast.ImportFrom)
            and (body[1].module or "").startswith("commands.") and [a.name for a in body[1].names] == ["main"]
            and isinstance(body[2], ast.If) and "SystemExit(main())" in ast.unparse(body[2]))


def level(module, path=None):  # "minineo.text.generation" -> 4; None for an entry point
    if module == "minineo" or (path is not None and is_shim(path)):
        return None
    return next(i for i, names in enumerate(LEVELS) if module.split(".")[1] in names)


def upward_imports(edges, paths):
    def name(m):
        return "an entry point" if level(m, paths.get(m)) is None else LEVELS[level(m, paths.get(m))][0]
    return [f"{a} ({name(a)}) imports {b} ({name(b)}), line {line}"
            for a, targets in edges.items() if level(a, paths.get(a)) is not None
            for b, line in targets.items() if level(b, paths.get(b)) is None
            or level(b, paths.get(b)) > level(a, paths.get(a))
            or (level(b, paths.get(b)) == level(a, paths.get(a)) and a.split(".")[1] != b.split(".")[1])]


def test_imports_only_point_down():
    found = upward_imports(graph(), modules())
    assert not found, "imports that point up (see LEVELS):\n" + "\n".join(found)


def test_every_python_m_spelling_is_a_shim():   # so that a shim cannot carry a command's code past the test above
    known = modules()
    shims = {name for name, path in known.items() if is_shim(path)}
    spellings = {name for name, path in known.items() if name.endswith("__main__") or
                 (path.parent == PACKAGE and path.stem not in ("__init__", "errors"))} | {"minineo.train.bench"}
    assert spellings == shims, f"not shims: {sorted(spellings - shims)}; shims elsewhere: {sorted(shims - spellings)}"


def test_an_upward_import_is_found():   # so that the test above can fail
    edges = {"minineo.model.block": {"minineo.fast.tiled": 3}, "minineo.text.generation": {"minineo.train.loop": 9},
             "minineo.fast.tiled": {"minineo.model.linear": 1}, "minineo.course.checker": {"minineo": 2}}
    assert len(upward_imports(edges, {})) == 3, upward_imports(edges, {})
