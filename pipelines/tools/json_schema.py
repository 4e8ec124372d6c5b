"""The JSON Schema subset the Live API takes for function parameters, and arguments checked by it.

Gemini's function declarations take an OpenAPI-style subset of JSON Schema (the fields of
``google.genai.types.Schema``): ``type`` (string, number, integer, boolean, array, object),
``description``, ``enum``, ``format``, ``nullable``, ``properties``, ``required``, ``items``,
``minItems``/``maxItems``, ``minimum``/``maximum``, ``minLength``/``maxLength``, ``pattern``,
``anyOf``, ``title``, ``default``, ``example``, ``propertyOrdering``,
``minProperties``/``maxProperties``. ``schema_problems`` lists what in a persona's schema falls
outside it (``$ref``, ``oneOf``, ``additionalProperties``, ``const``, a type list, ...), each as
``(path, message)``, so the persona loader can point at the field. ``argument_problems`` checks
the model's arguments against a schema that passed: the model does not always honour the
declaration, and a wrong request must not reach the user's service.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

TYPES = ("string", "number", "integer", "boolean", "array", "object")
_COMMON = {"type", "description", "title", "nullable", "enum", "default", "example", "anyOf"}
KEYS_BY_TYPE: dict[str, frozenset[str]] = {
    "string": frozenset({*_COMMON, "format", "minLength", "maxLength", "pattern"}),
    "number": frozenset({*_COMMON, "format", "minimum", "maximum"}),
    "integer": frozenset({*_COMMON, "format", "minimum", "maximum"}),
    "boolean": frozenset(_COMMON),
    "array": frozenset({*_COMMON, "items", "minItems", "maxItems"}),
    "object": frozenset(
        {*_COMMON, "properties", "required", "propertyOrdering", "minProperties", "maxProperties"}
    ),
}
# Keys of full JSON Schema a user may reach for, with what to write instead.
_INSTEAD = {
    "oneOf": "use anyOf",
    "allOf": "merge the schemas into one",
    "$ref": "write the schema out in place (no references)",
    "$defs": "write the schema out in place (no definitions)",
    "definitions": "write the schema out in place (no definitions)",
    "additionalProperties": "list every property under properties (extra arguments are refused)",
    "const": "use enum with one value",
    "exclusiveMinimum": "use minimum",
    "exclusiveMaximum": "use maximum",
    "patternProperties": "list every property under properties",
}
_INT_KEYS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")
MAX_DEPTH = 8

Path = tuple[str | int, ...]


def schema_problems(schema: Any, path: Path = ()) -> list[tuple[Path, str]]:
    """What in ``schema`` the Live API would not take, as ``(path, message)``; [] when fine.

    The top level must be an ``object`` (function parameters are named).
    """
    problems = list(_check(schema, path, 0))
    if not problems and isinstance(schema, Mapping) and _type(schema) != "object":
        problems.append(
            ((*path, "type"), f"got {schema.get('type')!r}, expected 'object' at the top level "
             "(a function's parameters are named properties)")
        )  # fmt: skip
    return problems


def _type(schema: Mapping[str, Any]) -> str | None:
    value = schema.get("type")
    return value.lower() if isinstance(value, str) else None


def _check(schema: Any, path: Path, depth: int) -> Iterator[tuple[Path, str]]:
    if not isinstance(schema, Mapping):
        yield path, f"got {type(schema).__name__}, expected a schema (a mapping with a type)"
        return
    if depth > MAX_DEPTH:
        yield path, f"got a schema nested deeper than {MAX_DEPTH} levels, expected a flatter one"
        return
    if "anyOf" in schema and "type" not in schema:
        yield from _check_any_of(schema, path, depth)
        return
    kind = schema.get("type")
    if isinstance(kind, list):
        yield (
            (*path, "type"),
            (
                f"got a list of types {kind!r}, expected one type; for an optional value use "
                "nullable: true, for alternatives anyOf"
            ),
        )
        return
    if not isinstance(kind, str) or kind.lower() not in TYPES:
        yield (*path, "type"), f"got {kind!r}, expected one of {', '.join(TYPES)}"
        return
    kind = kind.lower()
    allowed = KEYS_BY_TYPE[kind]
    for key in schema:
        if key in allowed:
            continue
        fix = _INSTEAD.get(str(key))
        other = [t for t, keys in KEYS_BY_TYPE.items() if key in keys]
        if fix:
            hint = f": not in the subset of JSON Schema the Live API takes; {fix}"
        elif other:
            hint = f": it applies to {' or '.join(other)}, not {kind}"
        else:
            hint = f": expected one of {', '.join(sorted(allowed))}"
        yield (*path, str(key)), f"got unknown schema key {key!r}{hint}"
    for key in ("description", "title", "format", "pattern"):
        if key in schema and not isinstance(schema[key], str):
            yield (*path, key), f"got {schema[key]!r}, expected a string"
    if "nullable" in schema and not isinstance(schema["nullable"], bool):
        yield (*path, "nullable"), f"got {schema['nullable']!r}, expected true or false"
    for key in _INT_KEYS:
        value = schema.get(key)
        if key in schema and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            yield (*path, key), f"got {value!r}, expected a whole number >= 0"
    for key in ("minimum", "maximum"):
        value = schema.get(key)
        if key in schema and (not isinstance(value, int | float) or isinstance(value, bool)):
            yield (*path, key), f"got {value!r}, expected a number"
    if "pattern" in schema and isinstance(schema["pattern"], str):
        try:
            re.compile(schema["pattern"])
        except re.error as e:
            yield (*path, "pattern"), f"got {schema['pattern']!r}, not a valid pattern ({e})"
    if "enum" in schema:
        enum = schema["enum"]
        if not isinstance(enum, list) or not enum:
            yield (*path, "enum"), f"got {enum!r}, expected a non-empty list of values"
        elif kind == "string" and not all(isinstance(v, str) for v in enum):
            yield (*path, "enum"), f"got {enum!r}, expected strings (the Live API's enums are)"
    if kind == "array":
        if "items" not in schema:
            yield path, "got an array without items, expected items: {type: …}"
        else:
            yield from _check(schema["items"], (*path, "items"), depth + 1)
    if kind == "object":
        yield from _check_object(schema, path, depth)
    if "anyOf" in schema:
        yield from _check_any_of(schema, path, depth)


def _check_any_of(schema: Mapping[str, Any], path: Path, depth: int) -> Iterator[tuple[Path, str]]:
    options = schema["anyOf"]
    if not isinstance(options, list) or not options:
        yield (*path, "anyOf"), f"got {options!r}, expected a non-empty list of schemas"
        return
    for i, option in enumerate(options):
        yield from _check(option, (*path, "anyOf", i), depth + 1)
    for key in schema:
        if key not in ("anyOf", "description", "title", "nullable", "type"):
            yield (*path, str(key)), f"got {key!r} beside anyOf, expected it inside each option"


def _check_object(schema: Mapping[str, Any], path: Path, depth: int) -> Iterator[tuple[Path, str]]:
    props = schema.get("properties", {})
    if not isinstance(props, Mapping):
        yield (*path, "properties"), f"got {props!r}, expected a mapping of name: schema"
        return
    for name, sub in props.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", name):
            yield (
                (*path, "properties"),
                (f"got property name {name!r}, expected letters, digits, _ . - (up to 64)"),
            )
        yield from _check(sub, (*path, "properties", str(name)), depth + 1)
    for key in ("required", "propertyOrdering"):
        names = schema.get(key)
        if key not in schema:
            continue
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            yield (*path, key), f"got {names!r}, expected a list of property names"
            continue
        for name in names:
            if name not in props:
                known = ", ".join(props) or "none"
                yield (*path, key), f"got {name!r}, expected a name under properties ({known})"


# --- arguments --------------------------------------------------------------------------------


def argument_problems(schema: Mapping[str, Any], value: Any, path: str = "") -> list[str]:
    """Why ``value`` (the model's arguments) does not fit ``schema``; [] when it does.

    Each message names the argument (``date``, ``slots[0].time``), what was expected and what
    came, in words the model can act on.
    """
    return list(_arg(schema, value, path))


def _name(path: str) -> str:
    return path or "the arguments"


def _arg(schema: Mapping[str, Any], value: Any, path: str) -> Iterator[str]:
    if value is None:
        if schema.get("nullable") or "type" not in schema and "anyOf" not in schema:
            return
        yield f"{_name(path)}: got null, expected {schema.get('type', 'a value')}"
        return
    if "anyOf" in schema and "type" not in schema:
        if not any(not list(_arg(option, value, path)) for option in schema["anyOf"]):
            yield f"{_name(path)}: got {_shown(value)}, expected one of the anyOf options"
        return
    kind = str(schema.get("type", "")).lower()
    ok = {
        "string": isinstance(value, str),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "integer": (isinstance(value, int) and not isinstance(value, bool))
        or (isinstance(value, float) and value.is_integer()),
        "boolean": isinstance(value, bool),
        "array": isinstance(value, list),
        "object": isinstance(value, Mapping),
    }.get(kind, True)
    if not ok:
        yield f"{_name(path)}: got {_shown(value)}, expected {kind}"
        return
    if "enum" in schema and value not in schema["enum"]:
        yield f"{_name(path)}: got {_shown(value)}, expected one of {schema['enum']!r}"
    if kind == "string":
        yield from _string(schema, value, path)
    elif kind in ("number", "integer"):
        if "minimum" in schema and value < schema["minimum"]:
            yield f"{_name(path)}: got {value}, expected at least {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            yield f"{_name(path)}: got {value}, expected at most {schema['maximum']}"
    elif kind == "array":
        if "minItems" in schema and len(value) < schema["minItems"]:
            yield f"{_name(path)}: got {len(value)} items, expected at least {schema['minItems']}"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            yield f"{_name(path)}: got {len(value)} items, expected at most {schema['maxItems']}"
        for i, item in enumerate(value):
            yield from _arg(schema.get("items", {}), item, f"{path}[{i}]")
    elif kind == "object":
        yield from _object(schema, value, path)


def _string(schema: Mapping[str, Any], value: str, path: str) -> Iterator[str]:
    if "minLength" in schema and len(value) < schema["minLength"]:
        yield f"{_name(path)}: got {len(value)} characters, expected at least {schema['minLength']}"
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        yield f"{_name(path)}: got {len(value)} characters, expected at most {schema['maxLength']}"
    if "pattern" in schema and not re.search(schema["pattern"], value):
        yield f"{_name(path)}: got {_shown(value)}, expected text matching {schema['pattern']!r}"


def _object(schema: Mapping[str, Any], value: Mapping[str, Any], path: str) -> Iterator[str]:
    props: Mapping[str, Any] = schema.get("properties", {})
    prefix = f"{path}." if path else ""
    for name in schema.get("required", []):
        if name not in value:
            yield f"{prefix}{name}: missing, expected a value (it is required)"
    for name, item in value.items():
        if name not in props:
            known = ", ".join(props) or "none"
            yield f"{prefix}{name}: got an unexpected argument, expected only {known}"
        else:
            yield from _arg(props[name], item, f"{prefix}{name}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
