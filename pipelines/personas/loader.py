"""Loading persona files: YAML -> ``Persona``, with every error as ``file:line: field: …``.

Only ``*.yaml``/``*.yml`` files directly in the directory are personas; subfolders (such as
``prompts/``) hold files personas refer to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipelines.personas.checks import check_persona, did_you_mean, one_of
from pipelines.personas.schema import Persona, persona_fields
from pipelines.personas.yaml_source import LoadedYaml, YamlError, load_yaml

_FIELDS = persona_fields()
_RESERVED = {"id": "the file name is the persona id", "source": "set by the loader"}


class PersonaConfigError(ValueError):
    """One or more persona files are invalid; ``errors`` holds one message per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = list(errors)


@dataclass
class FileResult:
    """What loading one persona file produced."""

    persona: Persona | None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    loaded: LoadedYaml | None = None


def persona_files(directory: Path) -> list[Path]:
    """Persona files directly in ``directory``, sorted (subfolders are not personas)."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml"))


def format_path(path: tuple[str | int, ...]) -> str:
    """``("numbers", 1)`` -> ``numbers[1]``; ``("session", "thinking")`` -> ``session.thinking``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(file)"


def _shown(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _pydantic_message(err: Mapping[str, Any]) -> tuple[tuple[str | int, ...], str]:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p[:1].isupper()))
    kind, value, msg = err["type"], err.get("input"), str(err["msg"])
    if kind == "extra_forbidden":
        parent = loc[:-1]
        key = str(loc[-1])
        allowed = [k[-1] for k in _FIELDS if k[:-1] == parent and k[-1] not in _RESERVED]
        return loc, f"got unknown key {key!r}, expected {one_of(allowed, 10)}" + did_you_mean(
            key, allowed
        )
    if kind == "value_error":
        return loc, msg.removeprefix("Value error, ")
    if kind == "missing":
        return loc, "got nothing, expected a value (this key is required)"
    if kind == "literal_error":
        expected = str(err.get("ctx", {}).get("expected", ""))
        choices = [c.strip(" '") for c in expected.replace(" or ", ", ").split(",")]
        hint = did_you_mean(str(value), choices) if isinstance(value, str) else ""
        return loc, f"got {_shown(value)}, expected one of {expected}{hint}"
    if kind == "string_type":
        return loc, f"got {_shown(value)}, expected a string (put it in quotes)"
    if kind in ("bool_type", "bool_parsing"):
        return loc, f"got {_shown(value)}, expected true or false"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return loc, f"got {_shown(value)}, expected a mapping of keys"
    if kind in ("tuple_type", "list_type"):
        return loc, f"got {_shown(value)}, expected a list"
    return loc, f"got {_shown(value)}, expected {msg.removeprefix('Input should be ')}"


def _read_instruction(file: Path, data: dict[str, Any], loaded: LoadedYaml) -> list[str]:
    ref = data.get("system_instruction_file")
    if ref is None:
        return []
    where = f"{file}:{loaded.line_of(('system_instruction_file',))}: system_instruction_file"
    if not isinstance(ref, str):
        return [f"{where}: got {_shown(ref)}, expected a path (a string)"]
    if data.get("system_instruction") is not None:
        return [f"{where}: got both system_instruction and system_instruction_file, expected one"]
    target = file.parent / ref
    try:
        data["system_instruction"] = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = "not found" if isinstance(e, FileNotFoundError) else str(e)
        return [
            f"{where}: got {ref!r}, expected a readable UTF-8 file relative to the persona "
            f"file ({target}: {reason})"
        ]
    return []


def load_persona_file(file: Path, environ: Mapping[str, str] | None = None) -> FileResult:
    """Load and check one persona file; errors are collected, never raised.

    ``environ``: the server's environment, for checks that a named variable is set (a post-call
    webhook's ``secret_env``); None skips them (this library never reads the environment).
    """
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return FileResult(None, [f"{file}:1: (file): cannot read: {e}"])
    try:
        loaded = load_yaml(text)
    except YamlError as e:
        return FileResult(None, [f"{file}:{e.line}: {e.message}"])
    data = loaded.data
    if not isinstance(data, dict):
        found = "an empty file" if data is None else _shown(data)
        return FileResult(None, [f"{file}:1: (file): got {found}, expected a mapping of keys"])
    result = FileResult(None, loaded=loaded)
    for key, why in _RESERVED.items():
        if key in data:
            line = loaded.line_of((key,))
            result.errors.append(
                f"{file}:{line}: {key}: got key {key!r}, expected no such key: {why}"
            )
    result.errors.extend(_read_instruction(file, data, loaded))
    if result.errors:
        return result
    try:
        persona = Persona.model_validate(
            {**data, "id": file.stem, "source": file},
            context=None if environ is None else {"environ": environ},
        )
    except ValidationError as e:
        for err in e.errors():
            loc, message = _pydantic_message(err)
            if loc and loc[0] == "system_instruction" and "system_instruction_file" in data:
                loc = ("system_instruction_file", *loc[1:])
            if not loc:
                loc = ("system_instruction",)
            result.errors.append(f"{file}:{loaded.line_of(loc)}: {format_path(loc)}: {message}")
        return result
    for issue in check_persona(persona):
        text = f"{file}:{loaded.line_of(issue.path)}: {format_path(issue.path)}: {issue.message}"
        {"error": result.errors, "warning": result.warnings, "info": result.notes}[
            issue.level
        ].append(text)
    if not result.errors:
        result.persona = persona
    return result


def check_directory(
    directory: Path, environ: Mapping[str, str] | None = None
) -> tuple[list[FileResult], list[str]]:
    """Load every persona file and run the cross-file checks (``environ``: see above).

    Returns:
        The per-file results and the cross-file errors (numbers claimed twice, default count).
    """
    if not directory.is_dir():
        return [], [f"{directory}: not a directory, expected a folder of persona YAML files"]
    files = persona_files(directory)
    if not files:
        return [], [f"{directory}: no persona files (*.yaml), expected at least one"]
    results = [load_persona_file(f, environ) for f in files]
    errors: list[str] = []
    owners: dict[str, str] = {}
    defaults: list[str] = []
    unreadable = False
    for file, res in zip(files, results, strict=True):
        if res.loaded is None or not isinstance(res.loaded.data, dict):
            unreadable = True  # its default flag is unknown: skip the default count
            continue
        data = res.loaded.data
        numbers = data.get("numbers")
        for index, number in enumerate(numbers if isinstance(numbers, list) else []):
            line = res.loaded.line_of(("numbers", index))
            if isinstance(number, str) and number in owners:
                errors.append(
                    f"{file}:{line}: numbers[{index}]: got {number!r}, already answered by "
                    f"{owners[number]}; expected each number in one persona only"
                )
            elif isinstance(number, str):
                owners[number] = f"{file}:{line}"
        if data.get("default") is True:
            defaults.append(f"{file}:{res.loaded.line_of(('default',))}")
    if not defaults and not unreadable:
        errors.append(
            f"{directory}: no persona has default: true, expected exactly one (the persona "
            "that answers numbers no other persona lists)"
        )
    elif len(defaults) > 1:
        errors.append(
            f"{defaults[1]}: default: got true in {len(defaults)} personas ({', '.join(defaults)}),"
            " expected exactly one"
        )
    return results, errors
