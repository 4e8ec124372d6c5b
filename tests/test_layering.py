"""Layering: ``pipelines`` is a library that never imports the server or the lab.

An AST scan of every import statement, function-level and ``TYPE_CHECKING`` ones included:
``pipelines/`` must not import ``bot`` or ``sim``, and the server module and the app must not
import ``sim`` (the embedded emulator is wired in ``bot/serve_cmd.py`` with a lazy import).
Within ``pipelines`` the lower subpackages must not import the higher ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = ROOT / "pipelines"

# Subpackage -> the pipelines subpackages it must not import (lowest layers first).
FORBIDDEN_WITHIN: dict[str, tuple[str, ...]] = {
    "audio": ("personas", "gemini", "twilio", "call"),
    "personas": ("audio", "gemini", "twilio", "call"),
    "gemini": ("personas", "twilio", "call"),
    "twilio": ("personas", "gemini", "call"),
    "_compat": ("audio", "personas", "gemini", "twilio", "call"),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module an ``import``/``from … import`` in ``path`` names, with its line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                package = path.relative_to(ROOT).with_suffix("").parts[: -node.level]
                base = ".".join((*package, node.module or ""))
            else:
                base = node.module or ""
            found.append((node.lineno, base.rstrip(".")))
            # ``from pipelines import call`` names the submodule in the alias.
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
    return found


def offending(paths: list[Path], banned: tuple[str, ...]) -> list[str]:
    """``file:line: imports X`` for every import of a banned top-level package or module."""
    out = []
    for path in paths:
        for line, module in imported_modules(path):
            if any(module == b or module.startswith(b + ".") for b in banned):
                out.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
    return sorted(set(out))


def test_the_scan_sees_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    text = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from bot.stats import STATS\n"
        "def f():\n    import sim.emulator\n    from sim import testing\n"
    )
    probe = tmp_path / "probe.py"
    probe.write_text(text)
    modules = [m for _, m in imported_modules(probe)]
    assert "bot.stats" in modules and "sim.emulator" in modules and "sim.testing" in modules


def test_pipelines_never_imports_bot_or_sim() -> None:
    files = sorted(PIPELINES.rglob("*.py"))
    assert len(files) > 20, f"expected the pipelines package under {PIPELINES}, got {files}"
    bad = offending(files, ("bot", "sim"))
    assert not bad, (
        "pipelines/ is a library: it must not import the server (bot) or the lab (sim). "
        "Declare what it needs in pipelines/ports.py and let bot/ implement it:\n" + "\n".join(bad)
    )


def test_the_server_and_the_app_never_import_sim() -> None:
    files = [ROOT / "bot" / "server.py", ROOT / "bot" / "app.py"]
    bad = offending(files, ("sim",))
    assert not bad, (
        "bot/server.py and bot/app.py must not import sim; wire the emulator in "
        "bot/serve_cmd.py with a lazy import:\n" + "\n".join(bad)
    )


@pytest.mark.parametrize("subpackage", sorted(FORBIDDEN_WITHIN))
def test_lower_subpackages_do_not_import_higher_ones(subpackage: str) -> None:
    files = sorted((PIPELINES / subpackage).rglob("*.py"))
    assert files, f"expected pipelines/{subpackage}/, found no modules"
    banned = tuple(f"pipelines.{name}" for name in FORBIDDEN_WITHIN[subpackage])
    bad = offending(files, banned)
    assert not bad, (
        f"pipelines/{subpackage} may not import {', '.join(banned)} (see its __init__ "
        "docstring):\n" + "\n".join(bad)
    )


def test_every_subpackage_says_what_it_holds_and_may_import() -> None:
    for init in sorted(PIPELINES.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "import" in doc.lower(), (
            f"{init.relative_to(ROOT)}: docstring must say what it may import"
        )
