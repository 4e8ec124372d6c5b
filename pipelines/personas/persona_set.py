"""The checked personas of a folder: ``load_personas`` and ``PersonaSet`` (routing by number)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from loguru import logger

from pipelines.personas.loader import PersonaConfigError, check_directory
from pipelines.personas.schema import Persona


@dataclass(frozen=True)
class PersonaSet:
    """An immutable set of checked personas; a reload builds a new one.

    Attributes:
        personas: Persona id -> persona (read-only).
        default: The persona for numbers no persona lists.
        warnings: ``file:line: field: …`` warnings from loading.
        notes: Informational notes (e.g. a feature switched the API version to v1alpha).
    """

    personas: Mapping[str, Persona]
    default: Persona
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    _by_number: Mapping[str, Persona] = field(default_factory=dict, repr=False)

    @classmethod
    def of(
        cls,
        personas: list[Persona],
        warnings: tuple[str, ...] = (),
        notes: tuple[str, ...] = (),
    ) -> PersonaSet:
        """Build a set from checked personas (exactly one must be the default)."""
        defaults = [p for p in personas if p.default]
        if len(defaults) != 1:
            raise PersonaConfigError(
                [f"got {len(defaults)} personas with default: true, expected exactly one"]
            )
        by_number = {n: p for p in personas for n in p.numbers}
        return cls(
            personas=MappingProxyType({p.id: p for p in personas}),
            default=defaults[0],
            warnings=warnings,
            notes=notes,
            _by_number=MappingProxyType(by_number),
        )

    def for_number(self, to: str | None) -> Persona:
        """The persona answering ``to`` (Twilio's ``To``), else the default."""
        if to is None:
            return self.default
        return self._by_number.get(to.strip(), self.default)

    def get(self, persona_id: str) -> Persona | None:
        """The persona with this id, or ``None``."""
        return self.personas.get(persona_id)


def load_personas(directory: Path, environ: Mapping[str, str] | None = None) -> PersonaSet:
    """Load and check every persona file in ``directory`` (not its subfolders).

    ``environ`` is the server's environment, for the checks that a variable a persona names is
    set (None skips them: this library never reads the environment itself).

    Warnings are logged and kept on the set; INFO notes are logged.

    Raises:
        PersonaConfigError: every error of every file, one ``file:line: field: …`` per line.
    """
    results, errors = check_directory(Path(directory), environ)
    all_errors = [e for r in results for e in r.errors] + errors
    if all_errors:
        raise PersonaConfigError(all_errors)
    warnings = tuple(w for r in results for w in r.warnings)
    notes = tuple(n for r in results for n in r.notes)
    for warning in warnings:
        logger.warning(warning)
    for note in notes:
        logger.info(note)
    return PersonaSet.of([r.persona for r in results if r.persona is not None], warnings, notes)
