"""The shape of the house: no import cycle, no module over 500 lines, no class over 300 lines.

Read from the source with `ast` (nothing is imported or run): every Python file of the checkout,
in every folder at any depth (the virtual environments, data and logs aside). tests/ and bench/
are in the import graph but outside the size rule.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Not the project's code: environments, tools, runtime output, and folders git ignores.
NOT_CODE = {".venv", ".tools", ".git", "data", "logs", "node_modules", "__pycache__", "artifacts"}
OUTSIDE_SIZE_RULE = ("tests", "bench")
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300


def project_modules(root: Path = REPO) -> dict[str, Path]:
    """Module name → file, for every Python file under `root` at any depth."""
    modules: dict[str, Path] = {}
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in NOT_CODE and not d.startswith("."))
        for file in sorted(f for f in files if f.endswith(".py")):
            parts = (Path(folder) / file).relative_to(root).parts
            stem = file.removesuffix(".py")
            names = [*parts[:-1], stem] if stem != "__init__" else list(parts[:-1])
            modules[".".join(names)] = Path(folder) / file
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `name` imports, wherever in the file (a function-level import is an
    import too); imports only for type checkers are left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and _is_type_checking(node)
        for child in node.body
        for n in ast.walk(child)
    }
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parent, base] if base else parent)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def oversized(modules: dict[str, Path], root: Path = REPO) -> list[str]:
    """Each module over MAX_MODULE_LINES and class over MAX_CLASS_LINES, as a sentence."""
    found = []
    for path in sorted(modules.values()):
        where = path.relative_to(root).as_posix()
        if where.startswith(tuple(f"{folder}/" for folder in OUTSIDE_SIZE_RULE)):
            continue
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            found.append(f"{where} has {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno is not None
                size = node.end_lineno - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    found.append(
                        f"class {node.name} in {where} has {size} lines (at most {MAX_CLASS_LINES})"
                    )
    return found


def test_the_import_graph_sees_the_project_modules_and_their_imports():
    """The walk itself: it finds the modules and the imports everyone knows are there."""
    modules = project_modules()
    assert {"daemon", "main", "engine.downloader", "web.routes.api", "updater.checker"} <= set(
        modules
    )
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert "daemon" in graph["main"]
    assert "daemon" in graph["web.routes.api"]
    assert "errors" in graph["engine.downloader"]
    assert "httpx" not in graph["engine.downloader"]  # only the project's own modules
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_a_new_package_at_any_depth_with_a_cycle_or_an_oversized_module_fails(tmp_path):
    """The walk reaches a package nobody listed: a cycle and a long module in it are found."""
    deep = tmp_path / "wing" / "room"
    deep.mkdir(parents=True)
    for folder in (tmp_path / "wing", deep):
        (folder / "__init__.py").write_text('"""A package."""\n')
    (deep / "a.py").write_text("from wing.room import b\n")
    (deep / "b.py").write_text("from . import a\n")
    (tmp_path / "wing" / "long.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    (tmp_path / ".venv" / "lib").mkdir(parents=True)
    (tmp_path / ".venv" / "lib" / "huge.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    modules = project_modules(tmp_path)
    assert {"wing", "wing.room", "wing.room.a", "wing.room.b", "wing.long"} == set(modules)
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert find_cycle(graph) == ["wing.room.a", "wing.room.b", "wing.room.a"]
    assert oversized(modules, tmp_path) == [
        f"wing/long.py has {MAX_MODULE_LINES + 1} lines (at most {MAX_MODULE_LINES})"
    ]


def test_no_import_cycle_among_the_project_modules():
    modules = project_modules()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_no_module_over_500_lines_and_no_class_over_300_lines():
    problems = oversized(project_modules())
    assert problems == [], "split by concern: " + "; ".join(problems)


def package_rules(modules: dict[str, Path]) -> dict[str, list[str]]:
    """Each package's "Must not import: a, b" line of its __init__ docstring, as a list."""
    rules = {}
    for name, path in modules.items():
        if path.name != "__init__.py" or name.split(".")[0] in OUTSIDE_SIZE_RULE:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        _, said, rest = doc.partition("Must not import:")
        assert said, f"{path}: its docstring must say what the package must not import"
        words = rest.split("\n\n")[0].replace("\n", " ")  # the line may wrap
        rules[name] = [w.strip() for w in words.split(",") if w.strip()]
    return rules


def all_imports(path: Path) -> set[str]:
    """Every module a file imports, the project's and others' (fastapi, ...), by full name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return found


def broken_rules(modules: dict[str, Path]) -> list[str]:
    broken = []
    for package, forbidden in package_rules(modules).items():
        for name, path in modules.items():
            if name != package and not name.startswith(package + "."):
                continue
            for imported in sorted(all_imports(path)):
                for rule in forbidden:
                    if imported == rule or imported.startswith(rule + "."):
                        broken.append(f"{name} imports {imported} ({package} must not)")
    return sorted(set(broken))


def test_every_package_says_what_it_owns_and_imports_nothing_it_must_not():
    problems = broken_rules(project_modules())
    assert problems == [], "; ".join(problems)


def test_a_package_importing_what_it_must_not_fails(tmp_path):
    (tmp_path / "wing").mkdir()
    (tmp_path / "wing" / "__init__.py").write_text(
        '"""A wing.\n\nMust not import: web, fastapi\n"""\n'
    )
    (tmp_path / "wing" / "room.py").write_text("from fastapi import Request\nimport web.auth\n")
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "__init__.py").write_text('"""Web.\n\nMust not import: main\n"""\n')
    (tmp_path / "web" / "auth.py").write_text("import wing.room\n")
    assert broken_rules(project_modules(tmp_path)) == [
        "wing.room imports fastapi (wing must not)",
        "wing.room imports fastapi.Request (wing must not)",
        "wing.room imports web.auth (wing must not)",
    ]
