"""An AST scan for accesses to private names of Pipecat and google-genai in our code.

Used by ``tests/test_private_access.py``. What counts as an access, in ``bot/``, ``pipelines/``
and ``sim/`` outside ``pipelines/_compat/``:

* ``self._x``, ``cls._x``, ``super()._x`` or ``def _x`` in a class whose MRO holds a Pipecat or
  google-genai class that defines ``_x`` (a method, a class attribute or ``self._x = ...``);
* ``obj._x`` on any other receiver, when ``_x`` is defined somewhere in the installed Pipecat or
  google-genai source and not by a class of our own in the same module or one it imports
  (receivers are not typed; this keeps our own ``session._streaming`` out);
* an import of a private module or name: ``from google.genai import _live_converters``.

The library side is read from the installed source (only the files whose text holds a name in
question are parsed: parsing all of it took seconds); our classes' MROs come from importing
our modules (importing them has no side effects: ``tests/test_compat.py``), except
``__main__`` modules, which are only read.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import google.genai
import pipecat

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("bot", "pipelines", "sim")
QUARANTINE = ROOT / "pipelines" / "_compat"
LIBRARIES = ("pipecat", "google.genai")
LIBRARY_DIRS = (Path(pipecat.__file__).parent, Path(google.genai.__file__).parent)


@dataclass(frozen=True, order=True)
class Access:
    """One access: ``path`` relative to the repository, line, the private name, the receiver."""

    path: str
    line: int
    name: str
    receiver: str
    owner: str = ""  # the library class that defines ``name``, when the scan knows it


def is_private(name: str) -> bool:
    """``_x`` but not ``__x__``."""
    return name.startswith("_") and not name.endswith("__")


def _walk_own(cls_node: ast.ClassDef) -> Iterator[ast.AST]:
    """The nodes of a class body, not those of the classes nested in it."""
    todo: list[ast.AST] = [n for n in cls_node.body if not isinstance(n, ast.ClassDef)]
    while todo:
        node = todo.pop()
        yield node
        todo.extend(c for c in ast.iter_child_nodes(node) if not isinstance(c, ast.ClassDef))


def _class_names(cls_node: ast.ClassDef) -> set[str]:
    """Private names a class body defines: methods, class attributes, ``self._x = ...``."""
    out: set[str] = set()
    for node in cls_node.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out.update(t.id for t in targets if isinstance(t, ast.Name))
    for node in _walk_own(cls_node):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
        ):
            out.add(node.attr)
    return {n for n in out if is_private(n)}


@functools.cache
def _parsed(path: str) -> ast.Module:
    return ast.parse(Path(path).read_text(), filename=path)


@functools.cache
def _walked(path: str) -> tuple[list[ast.AST], dict[ast.AST, ast.AST]]:
    """The nodes of a parsed file in ``ast.walk`` order, and each node's parent (walked once)."""
    nodes: list[ast.AST] = [_parsed(path)]
    parents: dict[ast.AST, ast.AST] = {}
    for node in nodes:  # grows as it goes: breadth first, as ``ast.walk``
        for child in ast.iter_child_nodes(node):
            parents[child] = node
            nodes.append(child)
    return nodes, parents


def _find_class(tree: ast.AST, qualname: str) -> ast.ClassDef | None:
    node: ast.AST = tree
    for part in qualname.split("."):
        found = [
            n for n in getattr(node, "body", []) if isinstance(n, ast.ClassDef) and n.name == part
        ]
        if not found:
            return None
        node = found[0]
    return node if isinstance(node, ast.ClassDef) else None


def is_library(module: str) -> bool:
    """Whether a module name belongs to Pipecat or google-genai."""
    return any(module == lib or module.startswith(lib + ".") for lib in LIBRARIES)


@functools.cache
def library_class_names(cls: type, own_only: bool = False) -> frozenset[str]:
    """Private names the Pipecat/google-genai classes in ``cls``'s MRO (or ``cls``) define."""
    out: set[str] = set()
    for klass in (cls,) if own_only else cls.__mro__:
        if not is_library(klass.__module__):
            continue
        try:
            path = inspect.getsourcefile(klass)
        except TypeError:
            continue
        node = _find_class(_parsed(path), klass.__qualname__) if path else None
        if node is not None:
            out |= _class_names(node)
    return frozenset(out)


def library_owner(module: object, cls_node: ast.ClassDef, name: str) -> str:
    """``module:Qualname`` of the first library class in the MRO that defines ``name``, or ""."""
    cls = getattr(module, cls_node.name, None) if module is not None else None
    if not isinstance(cls, type):
        return ""
    for klass in cls.__mro__:
        if is_library(klass.__module__) and name in library_class_names(klass, own_only=True):
            return f"{klass.__module__}:{klass.__qualname__}"
    return ""


@functools.cache
def _library_sources() -> tuple[tuple[str, str], ...]:
    """Each Pipecat/google-genai source file with its text, for a quick look before parsing.

    A text that is not ASCII is NFKC-normalised, as Python normalises identifiers: a name a
    file defines is then always in its text.
    """
    out = []
    for folder in LIBRARY_DIRS:
        for path in folder.rglob("*.py"):
            text = path.read_text()
            out.append((str(path), text if text.isascii() else unicodedata.normalize("NFKC", text)))
    return tuple(out)


_LIBRARY_DEFINES: dict[str, bool] = {}


def library_private_names(among: Iterable[str]) -> frozenset[str]:
    """Those of the private names ``among`` defined anywhere in Pipecat's or google-genai's source.

    Defined: a function or class, an attribute or a variable assigned, or a module's name. Only
    the files whose text holds one of the names are parsed (parsing all 14 MB of both libraries
    takes seconds); answers are remembered.
    """
    names = {n for n in among if is_private(n)}
    todo = names - _LIBRARY_DEFINES.keys()
    if todo:
        stems = {Path(path).stem for path, _ in _library_sources()}
        found = todo & stems  # private modules
        word = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, sorted(todo))) + r")(?!\w)")
        for path, text in _library_sources():
            if not word.search(text):
                continue
            for node in ast.walk(_parsed(path)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    found.add(node.name)
                elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                    found.add(node.attr)
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    found.add(node.id)
        _LIBRARY_DEFINES.update((n, n in found) for n in todo)
    return frozenset(n for n in names if _LIBRARY_DEFINES[n])


def module_name(path: Path) -> str:
    """``pipelines/gemini/service.py`` -> ``pipelines.gemini.service``."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_files() -> list[Path]:
    """The scanned files: ``bot``, ``pipelines`` and ``sim``, without the quarantine."""
    files = [p for d in SCANNED for p in sorted((ROOT / d).rglob("*.py"))]
    return [p for p in files if QUARANTINE not in p.parents]


@functools.cache
def _our_pure_names(module: str) -> frozenset[str]:
    """Private names defined by the module's own classes that have no library base."""
    path = importlib.import_module(module).__file__
    assert path is not None
    loaded = importlib.import_module(module)
    out: set[str] = set()
    for node in _walked(path)[0]:
        if isinstance(node, ast.ClassDef):
            cls = getattr(loaded, node.name, None)
            if isinstance(cls, type) and any(is_library(k.__module__) for k in cls.__mro__):
                continue
            out |= _class_names(node)
    return frozenset(out)


def _imported_ours(nodes: list[ast.AST]) -> set[str]:
    out = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if node.module.split(".")[0] in SCANNED:
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] in SCANNED)
    return out


def _in_class(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> ast.ClassDef | None:
    """The class whose method ``node`` is in (None in a plain function or at module level)."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            parent = parents.get(node)
            if isinstance(parent, ast.ClassDef):
                return parent
    return None


def _accesses(path: Path) -> list[tuple[Access, str]]:
    """Candidate accesses in one of our files, each with a name the library must define ("": none).

    An access on another receiver counts only if the library defines its name at all, which
    :func:`resolve` checks for the candidates of every file at once.
    """
    rel = str(path.relative_to(ROOT))
    nodes, parents = _walked(str(path))
    # ``__main__`` modules run when imported (``sim/bench/__main__.py`` runs the benchmark).
    module = None if path.name == "__main__.py" else importlib.import_module(module_name(path))
    ours = set(_our_pure_names(module.__name__)) if module else set()
    for other in _imported_ours(nodes):
        try:
            ours |= _our_pure_names(other)
        except (ImportError, AttributeError):
            continue
    # Names our code passes as keywords (``parser.set_defaults(_run=...)``) are ours.
    ours |= {k.arg for k in nodes if isinstance(k, ast.keyword) and k.arg}
    not_library = {
        alias.asname or alias.name.split(".")[0]
        for node in nodes
        if isinstance(node, ast.Import)
        for alias in node.names
        if not is_library(alias.name)
    }

    out: list[tuple[Access, str]] = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and is_library(node.module):
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                if any(is_private(p) for p in dotted.split(".")):
                    out.append((Access(rel, node.lineno, alias.name, node.module), ""))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and is_private(node.name):
            owner = parents.get(node)
            if isinstance(owner, ast.ClassDef):
                found = library_owner(module, owner, node.name)
                if found:
                    access = Access(rel, node.lineno, node.name, f"def in {owner.name}", found)
                    out.append((access, ""))
        elif isinstance(node, ast.Attribute) and is_private(node.attr):
            receiver = ast.unparse(node.value)
            own = receiver in ("self", "cls", "super()")
            cls_node = _in_class(node, parents) if own else None
            if cls_node is not None:
                defined_by = library_owner(module, cls_node, node.attr)
                if defined_by:
                    out.append((Access(rel, node.lineno, node.attr, receiver, defined_by), ""))
            elif (
                node.attr not in ours
                and receiver.split(".")[0] not in not_library  # ``asyncio.events.Handle._run``
            ):
                out.append((Access(rel, node.lineno, node.attr, receiver), node.attr))
    return out


def resolve(candidates: list[tuple[Access, str]]) -> list[Access]:
    """The candidates whose name, if they need one, the library defines."""
    lib_names = library_private_names(name for _, name in candidates if name)
    return [access for access, name in candidates if not name or name in lib_names]


def scan_file(path: Path) -> Iterator[Access]:
    """Every access to a Pipecat/google-genai private name in one of our files."""
    yield from resolve(_accesses(path))


def scan() -> list[Access]:
    """The accesses in every scanned file, sorted."""
    return sorted(resolve([c for path in our_files() for c in _accesses(path)]))
