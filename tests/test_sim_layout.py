"""``sim/`` grouped by role: who may import whom, no import cycles, entry points and data files."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
SIM = ROOT / "sim"

# Package -> top-level names (``bot``, ``pipelines``, ``sim.<package>``) it must never import.
FORBIDDEN = {
    "sim.caller": {"bot", "pipelines", "sim.emulator", "sim.loadtest", "sim.bench", "sim.testing"},
    "sim.loadtest": {"bot", "pipelines", "sim.emulator", "sim.bench", "sim.testing"},
    "sim.emulator": {"bot", "sim.caller", "sim.loadtest", "sim.bench", "sim.testing"},
    "sim.bench": {"bot", "sim.testing"},
    "sim.twilio_api": {
        "bot",
        "pipelines",
        "sim.emulator",
        "sim.loadtest",
        "sim.bench",
        "sim.testing",
    },
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, *, runtime_only: bool) -> set[str]:
    """Modules ``path`` imports; ``runtime_only``: only at import time (no TYPE_CHECKING, defs)."""
    found: set[str] = set()

    def add(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (
                    node.body,
                    node.orelse,
                    node.finalbody,
                    *(h.body for h in node.handlers),
                ):
                    visit(block)
            else:
                add(node)

    tree = ast.parse(path.read_text(), str(path))
    if runtime_only:
        visit(tree.body)
    else:
        for node in ast.walk(tree):
            add(node)
    return found


def sim_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SIM.rglob("*.py"))}


def test_sim_packages_import_only_what_their_docstring_allows() -> None:
    wrong = []
    for name, path in sim_modules().items():
        package = ".".join(name.split(".")[:2])
        for imported in imports(path, runtime_only=False):
            for banned in FORBIDDEN.get(package, ()):
                if imported == banned or imported.startswith(banned + "."):
                    wrong.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_bot_and_pipelines_do_not_import_sim() -> None:
    # bot/ and pipelines/ never import sim/, except `voicebot serve` wiring in the embedded
    # emulator (lazily, in the command, when GEMINI_API_KEY is unset).
    allowed = {("bot.serve_cmd", "sim.emulator")}
    wrong = []
    for path in [*(ROOT / "bot").rglob("*.py"), *(ROOT / "pipelines").rglob("*.py")]:
        for imported in imports(path, runtime_only=False):
            if imported == "sim" or imported.startswith("sim."):
                top = ".".join(imported.split(".")[:2])
                if (module_name(path), top) not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_no_import_cycles_among_sim_modules_at_import_time() -> None:
    modules = sim_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for imported in imports(path, runtime_only=True):
            parts = imported.split(".")
            for i in range(1, len(parts) + 1):
                dep = ".".join(parts[:i])
                if dep in modules and dep != name and not name.startswith(dep + "."):
                    deps.add(dep)
        graph[name] = deps

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, path = stack.pop()
            for dep in graph[node]:
                if dep == start:
                    return [*path, start]
                if dep not in seen:
                    seen.add(dep)
                    stack.append((dep, [*path, dep]))
        return None

    cycles = [c for name in graph if (c := cycle_from(name))]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_package_data_globs_cover_every_data_file_under_sim() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["sim"]
    shipped = {p for g in globs for p in SIM.glob(g)}
    data = {
        p
        for p in SIM.rglob("*")
        if p.is_file() and p.suffix not in {".py", ".pyc"} and "__pycache__" not in p.parts
    }
    assert shipped and data - shipped == set(), sorted(str(p) for p in data - shipped)


def test_entry_points_start_and_cli_help_loads_no_aiohttp_or_numpy() -> None:
    code = (
        "import sys, bot.cli; bot.cli.build_parser();"
        "print(sorted(m for m in ('aiohttp', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr or out.stdout
    for module in ("sim.bench", "sim.bench.audio_quality", "sim.emulator.cmd"):
        run = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0 and "usage: python -m " + module in run.stdout, run.stderr
