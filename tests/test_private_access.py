"""Private names of Pipecat and google-genai are touched only where the compat table says.

An AST scan (``tests/private_access_scan.py``) of ``bot/``, ``pipelines/`` and ``sim/`` outside
``pipelines/_compat/``: every access to a private name of Pipecat or google-genai must be a row
of ``pipelines._compat.accesses.ACCESSES`` (same name, same file), so nothing new sneaks in
unlisted. The count per module is printed (``pytest -s``); issue 11's goal is under 10 rows.
"""

from __future__ import annotations

import importlib
import types
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines._compat.accesses import ACCESSES
from tests import private_access_scan
from tests.private_access_scan import QUARANTINE, Access, scan, scan_file

pytestmark = [pytest.mark.unit, pytest.mark.cpu_heavy]


def unlisted(accesses: list[Access]) -> list[str]:
    """``file:line: receiver._name`` for each access that no row of the table covers."""
    listed = {(path, row.name) for row in ACCESSES for path in row.used_in}
    return [
        f"{a.path}:{a.line}: {a.receiver}.{a.name}"
        for a in accesses
        if (a.path, a.name) not in listed
    ]


@pytest.fixture(scope="module")
def accesses() -> list[Access]:
    """One scan for the module's tests (~2 s of CPU each)."""
    return scan()


def test_every_private_access_is_in_the_compat_table(accesses: list[Access]) -> None:
    per_module = Counter(a.path for a in accesses)
    names = {(a.path, a.name) for a in accesses}
    print(f"\nprivate Pipecat/google-genai accesses: {len(accesses)} sites, {len(names)} names")
    for path, count in per_module.most_common():
        print(f"  {count:4d}  {path}")
    # The scan works: on the quarantine itself it finds the accesses listed there.
    inside = {(a.path, a.name) for f in QUARANTINE.glob("*.py") for a in scan_file(f)}
    assert ("pipelines/_compat/turn_stop.py", "_stop_secs_warned") in inside, inside
    missing = unlisted(accesses)
    assert not missing, (
        f"{len(missing)} private access(es) of Pipecat/google-genai are not in the compat "
        "table:\n  " + "\n  ".join(missing) + "\nFix: use a public API, or move the access into "
        "pipelines/_compat and add a row to pipelines/_compat/accesses.py naming the upstream "
        "change that would retire it."
    )


def test_the_table_lists_no_stale_rows(accesses: list[Access]) -> None:
    """Rows for files outside the quarantine must still be touched there (else delete them)."""
    found = {(a.path, a.name) for a in accesses}
    stale = [
        f"{path}: {row.owner}.{row.name}"
        for row in ACCESSES
        for path in row.used_in
        if not path.startswith("pipelines/_compat/")
        and row.owner.split(".")[0] in ("pipecat", "google")
        and (path, row.name) not in found
    ]
    assert not stale, "compat rows no code uses any more (delete them):\n  " + "\n  ".join(stale)


def test_an_unlisted_access_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new private access in a module of ours is found and reported as unlisted."""
    source = (
        "from pipecat.transports.base_output import BaseOutputTransport\n"
        "from google.genai import _transformers\n\n"
        "def peek(sender):\n"
        "    return sender._audio_queue\n\n"
        "class Out(BaseOutputTransport):\n"
        "    async def _handle_frame(self, frame):\n"
        "        return self._media_senders\n"
    )
    module = tmp_path / "pipelines" / "sneaky.py"
    module.parent.mkdir()
    module.write_text(source)
    monkeypatch.setattr(private_access_scan, "ROOT", tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(private_access_scan.importlib, "import_module", _fake_import(module))
    found = sorted((a.line, a.name) for a in scan_file(module))
    assert found == [
        (2, "_transformers"),
        (5, "_audio_queue"),
        (8, "_handle_frame"),
        (9, "_media_senders"),
    ]
    assert len(unlisted(list(scan_file(module)))) == 4


def _fake_import(path: Path) -> Callable[[str], object]:
    """``import_module`` that loads ``pipelines.sneaky`` from ``path``, leaving the real one."""
    real = importlib.import_module

    def load(name: str) -> object:
        if name != "pipelines.sneaky":
            return real(name)
        module = types.ModuleType(name)
        module.__file__ = str(path)
        exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
        return module

    return load
