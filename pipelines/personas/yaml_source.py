"""Persona YAML reading: a safe loader that keeps strings as strings and remembers key lines.

YAML 1.1 resolvers turn ``012`` into 10, ``+15551234567`` into an int and ``no``/``on`` into
booleans: surprises for phone numbers, DTMF digits and spoken text. This loader composes the node
tree itself and resolves only unambiguous plain scalars: ``true``/``false``, ``null``/``~``,
decimal integers without a leading zero or sign, and decimal floats. Everything else, quoted or
not, stays a string. Every mapping key's line is recorded for error messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

Path_ = tuple[str | int, ...]

_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]*)\.[0-9]+(?:[eE][-+]?[0-9]+)?")
_TRUE = {"true", "True", "TRUE"}
_FALSE = {"false", "False", "FALSE"}
_NULL = {"", "~", "null", "Null", "NULL"}


class YamlError(ValueError):
    """A YAML file could not be parsed; ``line`` is 1-based (0 when unknown)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass
class LoadedYaml:
    """A parsed document plus the 1-based line of every key and list item.

    Attributes:
        data: The document as plain Python values.
        lines: Path (tuple of keys and list indexes) -> line of that key or item.
    """

    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int:
        """The line of ``path``, or of its nearest ancestor that has one (1 for the root)."""
        for end in range(len(path), 0, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return 1


def _scalar(node: yaml.ScalarNode) -> Any:
    value = node.value
    if node.style is not None and node.style != "":
        return value  # quoted or block scalar: always a string
    if value in _NULL:
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    if _INT.fullmatch(value):
        return int(value)
    if _FLOAT.fullmatch(value):
        return float(value)
    return value


def _build(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return _scalar(node)
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, child in enumerate(node.value):
            lines[(*path, index)] = child.start_mark.line + 1
            items.append(_build(child, (*path, index), lines))
        return items
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlError(key_node.start_mark.line + 1, "a mapping key must be a plain word")
            key = key_node.value
            if key == "<<":
                raise YamlError(key_node.start_mark.line + 1, "merge keys (<<) are not supported")
            line = key_node.start_mark.line + 1
            if key in result:
                first = lines.get((*path, key), 0)
                raise YamlError(line, f"duplicate key {key!r} (first at line {first})")
            lines[(*path, key)] = line
            result[key] = _build(value_node, (*path, key), lines)
        return result
    raise YamlError(node.start_mark.line + 1, f"unsupported YAML node {node.tag}")


def load_yaml(text: str) -> LoadedYaml:
    """Parse one YAML document with string-preserving scalars and key lines.

    Raises:
        YamlError: with the 1-based line of a syntax error or unsupported construct.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 0
        problem = e.problem or str(e)
        context = f" ({e.context})" if e.context else ""
        raise YamlError(line, f"invalid YAML: {problem}{context}") from e
    except yaml.YAMLError as e:
        raise YamlError(0, f"invalid YAML: {e}") from e
    lines: dict[Path_, int] = {}
    if root is None:
        return LoadedYaml(None, lines)
    return LoadedYaml(_build(root, (), lines), lines)
