"""How values from a call enter a persona's templates: as data, never as instructions.

The caller controls what Twilio reports as ``From`` (caller ID is spoofable on a real phone
network) and, in development, the stream's custom parameters. So ``${caller}`` and ``${called}``
are checked for their kind (an E.164 number passes as is, anything else becomes ``unknown``),
and every ``${custom.X}`` is inserted as a JSON string in double quotes, capped, with quotes,
newlines and control or format characters escaped: a value cannot close its quotes or start a
line of its own in the system instruction.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping

E164 = re.compile(r"\+[1-9][0-9]{1,14}")
# What ${caller}/${called} read when the value is not a phone number (anonymous, SIP, text).
UNKNOWN_NUMBER = "unknown"
# A custom value is cut to this many characters before it is quoted.
MAX_DATA_CHARS = 100
PHONE_VARIABLES = frozenset({"caller", "called"})
# Control, format (bidi overrides, zero-width), line/paragraph separators, private, surrogates.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs"})


def phone_number(value: str) -> str:
    """``value`` if it is an E.164 number (``+`` and 2-15 digits), else ``unknown``."""
    return value if E164.fullmatch(value) else UNKNOWN_NUMBER


def quoted_data(value: str) -> str:
    """``value`` as a double-quoted JSON string, cut to ``MAX_DATA_CHARS`` characters."""
    text = json.dumps(value[:MAX_DATA_CHARS], ensure_ascii=False)
    return "".join(
        f"\\u{ord(c):04x}" if unicodedata.category(c) in _ESCAPED_CATEGORIES else c for c in text
    )


def template_values(values: Mapping[str, str]) -> dict[str, str]:
    """Template values made safe for the model: phone numbers checked, custom values quoted.

    Server-made values (times, the persona id, the time zone) pass unchanged.
    """
    safe: dict[str, str] = {}
    for name, value in values.items():
        if name in PHONE_VARIABLES:
            safe[name] = phone_number(value)
        elif name.startswith("custom."):
            safe[name] = quoted_data(value)
        else:
            safe[name] = value
    return safe
