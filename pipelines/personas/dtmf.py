"""The persona's ``dtmf:`` section: keys the caller presses, for the model and for actions.

Keys reach the model as the caller's input, batched into one short entry the way a person
types a PIN (``pipelines.call.dtmf``): keys are collected until the ``terminator`` key, until
``max_digits`` keys, or until ``inter_digit_timeout_secs`` pass without a key; the entry then
goes to the model as caller text, ``template`` with ``${keys}`` replaced by the keys pressed,
space-separated (``1 2 3 4 #``).

``keys`` maps single keys to actions taken without the model, when such a key starts an entry
(pressed with no other key pending): ``transfer`` (to a number, through the same ``<Dial>``
redirect as the ``transfer_call`` tool; ``say`` is Twilio's announcement before the dial) or
``end_call`` (``say`` is spoken as the goodbye, then the call is hung up as after ``end_call``;
without ``say`` it is hung up at once). Inside an entry a mapped key is a key like any other.

In YAML, quote ``#`` and ``*`` (``"#": {action: end_call}``): unquoted, ``#`` starts a comment
and ``*`` an alias.
"""

from __future__ import annotations

import difflib
import string
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from pipelines.personas.sections import _e164, _Strict

# The keys of a phone keypad, as Twilio's ``dtmf`` message names them.
KEYPAD = "0123456789*#"
DEFAULT_TEMPLATE = "The caller pressed these keys on the phone keypad: ${keys}"


def _keypad_key(value: str) -> str:
    if len(value) != 1 or value not in KEYPAD:
        raise ValueError(
            f"got {value!r}, expected one keypad key: 0-9, '*' or '#' (quote '*' and '#' in YAML)"
        )
    return value


KeypadKey = Annotated[str, AfterValidator(_keypad_key)]


class KeyAction(_Strict):
    """What one mapped key does, without the model.

    Attributes:
        action: ``transfer`` or ``end_call``.
        to: ``transfer`` only: the E.164 number to dial.
        say: ``transfer``: the announcement Twilio says before dialling; ``end_call``: the
            goodbye the bot says before hanging up (none: hang up at once).
    """

    action: Literal["transfer", "end_call"]
    to: str | None = None
    say: str | None = Field(default=None, min_length=1, max_length=500)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: object) -> object:
        # Said here: the loader's did-you-mean cannot see through the keys mapping.
        if isinstance(data, dict):
            fields = list(cls.model_fields)
            for name in data:
                if name not in fields:
                    close = difflib.get_close_matches(str(name), fields, n=1, cutoff=0.6)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    raise ValueError(
                        f"got unknown key {name!r}, expected one of {', '.join(fields)}{hint}"
                    )
        return data

    @field_validator("to")
    @classmethod
    def _to(cls, value: str | None) -> str | None:
        return None if value is None else _e164(value)

    @model_validator(mode="after")
    def _to_matches_action(self) -> KeyAction:
        if self.action == "transfer" and self.to is None:
            raise ValueError(
                "got action 'transfer' without 'to', expected the number to dial, e.g. "
                '{action: transfer, to: "+15551239999"}'
            )
        if self.action == "end_call" and self.to is not None:
            raise ValueError(
                f"got 'to' {self.to!r} with action 'end_call', expected no 'to' (only a "
                "transfer dials a number; did you mean action: transfer?)"
            )
        return self


class Dtmf(_Strict):
    """Keys the caller presses (see the module docstring).

    Attributes:
        enabled: Keys are handled at all; false ignores every key (and allows no ``keys``).
        terminator: The key that ends an entry at once (sent with it); null: none.
        max_digits: Keys in an entry (the terminator aside) that end it at once.
        inter_digit_timeout_secs: Quiet after the last key that ends an entry.
        template: What the model receives for an entry; ``${keys}`` is the keys pressed.
        keys: Single keys mapped to actions taken without the model.
    """

    enabled: bool = True
    terminator: str | None = "#"
    max_digits: int = Field(default=16, ge=1, le=64)
    inter_digit_timeout_secs: float = Field(default=2.0, gt=0, le=30)
    template: str = Field(default=DEFAULT_TEMPLATE, min_length=1, max_length=500)
    keys: dict[KeypadKey, KeyAction] = Field(default_factory=dict)

    @field_validator("terminator")
    @classmethod
    def _terminator(cls, value: str | None) -> str | None:
        return None if value is None else _keypad_key(value)

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        template = string.Template(value)
        names = template.get_identifiers() if template.is_valid() else None
        if names != ["keys"]:
            raise ValueError(
                f"got {value!r}, expected a text with ${{keys}} and no other placeholder "
                "(the keys pressed go there), e.g. 'The caller pressed: ${keys}'"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Dtmf:
        if not self.enabled and self.keys:
            raise ValueError(
                "got keys with enabled: false, expected enabled: true (keys are ignored when "
                "DTMF is off) or no keys"
            )
        if self.terminator is not None and self.terminator in self.keys:
            raise ValueError(
                f"got key {self.terminator!r} both as the terminator and in keys, expected one "
                "role for it (set terminator: null, or map another key)"
            )
        return self

    def entry_text(self, keys: str) -> str:
        """What the model receives for an entry of ``keys`` (``1 2 3 4 #``)."""
        return string.Template(self.template).substitute(keys=" ".join(keys))
