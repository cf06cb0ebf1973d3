"""The layout's rules: production code never reaches development tooling, and no module grows past 400 lines."""

from __future__ import annotations

import ast
import gc
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("shared.dev", "shared.cli")  # development tooling, and the CLI that drives it
MAX_LINES = 400
# Over the limit today, each being split by its owner. This list only ever shrinks: never add to it.
TOO_LONG_FOR_NOW = frozenset[str]()


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_path(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _parse(path: Path) -> ast.Module:
    """ast.parse with the cyclic GC paused: on CPython 3.11 a finalizer that runs mid-parse and formats a traceback
    (pytest's unraisable-exception hook does) parses too, and the outer parse fails with "AST constructor
    recursion depth mismatch" (python/cpython#106905)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(path.read_text(), str(path))
    finally:
        if enabled:
            gc.enable()


def _imported(path: Path) -> Iterator[str]:
    """Every module an import statement anywhere in the file loads, parent packages included."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]  # a name may be a submodule
        else:
            continue
        for name in names:
            parts = name.split(".")
            yield from (".".join(parts[:i]) for i in range(1, len(parts) + 1))


def _forbidden(name: str) -> bool:
    return any(name == root or name.startswith(f"{root}.") for root in FORBIDDEN)


def _forbidden_reached(root: Path) -> dict[str, str]:
    """Each forbidden module `root` loads, directly or through shared.* modules, with the import chain to it."""
    reached: dict[str, str] = {}
    seen: set[str] = set()
    todo: list[tuple[Path, list[str]]] = [(root, [_module_name(root)])]
    while todo:
        path, chain = todo.pop()
        for name in _imported(path):
            if name in seen or not (name == "shared" or name.startswith("shared.")):
                continue
            seen.add(name)
            if _forbidden(name):
                reached[name] = " -> ".join([*chain, name])
            elif (found := _module_path(name)) is not None:
                todo.append((found, [*chain, name]))
    return reached


def _python_files(*folders: str) -> list[Path]:
    files = [path for folder in folders for path in sorted((ROOT / folder).rglob("*.py"))]
    return [path for path in files if not path.is_relative_to(ROOT / "tests" / "realopencode" / "fixtures")]


def test_production_code_never_imports_development_tooling_or_the_cli() -> None:
    reached = {
        name: chain for path in _python_files("poller", "gateway") for name, chain in _forbidden_reached(path).items()
    }
    assert reached == {}


def test_the_import_walk_sees_what_it_must_forbid() -> None:
    """The walk itself works: the CLI's `dev` command does reach the supervisor."""
    reached = _forbidden_reached(ROOT / "shared" / "cli" / "dev.py")
    assert "shared.dev.supervisor.stack" in reached


def test_the_cli_loads_no_development_module() -> None:
    """Every command registered and the help rendered, as `opencode-sessions --help` does, in a fresh interpreter."""
    code = (
        "import contextlib, io, json, sys\n"
        "import shared.cli\n"
        "sys.argv = ['opencode-sessions', '--help']\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    shared.cli.main()\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('shared.'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = json.loads(result.stdout)
    assert "shared.cli.dev" in loaded  # the `dev` command is registered...
    assert [name for name in loaded if name == "shared.dev" or name.startswith("shared.dev.")] == []  # ...lazily


def test_no_module_is_over_400_lines() -> None:
    lengths = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in _python_files("poller", "gateway", "shared", "tests")
    }
    too_long = {name: n for name, n in lengths.items() if n > MAX_LINES and name not in TOO_LONG_FOR_NOW}
    assert too_long == {}
    assert sorted(name for name in TOO_LONG_FOR_NOW if lengths.get(name, 0) <= MAX_LINES) == []  # shrink the list
