"""Quarantine for what touches library internals (Pipecat, google-genai) beyond public APIs.

``accesses.ACCESSES`` lists every private name our code touches, with the upstream change that
would retire it; ``check()`` (run at server start) verifies that the installed Pipecat and
google-genai are the versions this code was written against and that each listed name exists,
and raises one ``CompatError`` naming what is missing and the fix. Nothing here (or anywhere
in ``pipelines`` and ``bot``) changes a Pipecat or google-genai class.
May import Pipecat and google-genai only.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import types
from collections.abc import Iterable, Iterator
from typing import Any

from pipelines._compat.accesses import ACCESSES, PrivateAccess

# Distribution -> (lowest, first excluded) version this code was written against (pyproject).
PINNED: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "pipecat-ai": ((1, 14, 0), (1, 14, 1)),
    "google-genai": ((2, 34), (3,)),
}


class CompatError(RuntimeError):
    """The installed libraries are not those the quarantined private accesses were written for."""


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def version_problems(pinned: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]) -> list[str]:
    """One line per distribution that is missing or outside its pinned range."""
    out = []
    for dist, (low, high) in pinned.items():
        try:
            got = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{dist}: not installed (expected >={_dotted(low)},<{_dotted(high)})")
            continue
        if not low <= _version_tuple(got) < high:
            out.append(f"{dist}: installed {got}, expected >={_dotted(low)},<{_dotted(high)}")
    return out


def _code_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_names(const)


def _resolve(owner: str) -> Any:
    module_name, _, qualname = owner.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split(".") if qualname else ():
        obj = getattr(obj, part)
    return obj


def _has(owner: Any, name: str) -> bool:
    """Whether a class (its MRO, or a ``self.<name>`` its methods touch) or module has ``name``."""
    if hasattr(owner, name):
        return True
    if isinstance(owner, types.ModuleType):
        return importlib.util.find_spec(f"{owner.__name__}.{name}") is not None
    for klass in owner.__mro__:
        for value in vars(klass).values():
            func = getattr(value, "__func__", value)
            code = getattr(func, "__code__", None)
            if isinstance(code, types.CodeType) and name in _code_names(code):
                return True
    return False


def attribute_problems(accesses: Iterable[PrivateAccess]) -> list[str]:
    """One line per listed private name that the installed libraries do not have."""
    out = []
    for access in accesses:
        where = ", ".join(access.used_in)
        try:
            owner = _resolve(access.owner)
        except (ImportError, AttributeError) as e:
            out.append(f"{access.owner}: not found ({e}); used for {access.name} in {where}")
            continue
        if not _has(owner, access.name):
            out.append(f"{access.owner}.{access.name}: missing; used in {where}")
    return out


def check(
    accesses: Iterable[PrivateAccess] = ACCESSES,
    pinned: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = PINNED,
) -> None:
    """Verify the pinned versions and every private name we touch; raise ``CompatError`` if not.

    Args:
        accesses: The compat table (default: ``accesses.ACCESSES``).
        pinned: Distribution -> (lowest, first excluded) version.
    """
    from pipelines._compat import genai_session

    problems = version_problems(pinned) + attribute_problems(accesses) + genai_session.problems()
    if problems:
        raise CompatError(
            "pipelines._compat: the installed libraries do not match what this code patches "
            "or reads privately:\n  - "
            + "\n  - ".join(problems)
            + "\nFix: install the pinned versions (pip install -r requirements.lock), or port "
            "the code that uses these names and update pipelines/_compat (PINNED, accesses.py)."
        )
