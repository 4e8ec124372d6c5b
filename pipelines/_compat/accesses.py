"""The compat table: every private name of a library (Pipecat, google-genai, asyncio) we touch.

One row per (owner, name): the owning class (``module:Qualname``) or module, the private name,
the files that touch it, and the upstream change (or our own rewrite on a public seam) that
would retire it. ``pipelines._compat.check()`` verifies at start that each name exists in the
installed libraries; ``tests/test_private_access.py`` fails when our code touches a Pipecat or
google-genai private name that is not listed here. Issue 11's goal is under 10 rows.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PrivateAccess:
    """One private library name our code touches.

    Attributes:
        owner: ``package.module:Class.Nested`` for a class, ``package.module`` for a module.
        name: The private attribute (method, class or instance attribute, submodule).
        used_in: Repository paths of the files that touch it.
        retire: The upstream change or public seam that would make it unnecessary.
    """

    owner: str
    name: str
    used_in: tuple[str, ...]
    retire: str


def _group(owner: str, retire: str, names_by_file: dict[str, str]) -> list[PrivateAccess]:
    """Rows for one owner: ``{file: "name name ..."}`` -> one row per name, files merged."""
    files: dict[str, list[str]] = {}
    for path, names in names_by_file.items():
        for name in names.split():
            files.setdefault(name, []).append(path)
    return [PrivateAccess(owner, name, tuple(paths), retire) for name, paths in files.items()]


# What would retire each cluster (the plan for the next step of issue 11).
R_TRANSPORT = (
    "an upstream public register_event_handler on BaseObject, and transports built on "
    "the public BaseTransport constructor arguments (name)"
)
R_RAW_SESSION = (
    "a public raw send/receive (or a faster public decode in receive) on google-genai's "
    "AsyncSession: caller audio as prebuilt JSON, model audio parsed without validation"
)
R_TURN = "an upstream constructor flag to silence the stop_secs advice for speech-to-speech"
R_PROBE = "none upstream (asyncio has no per-callback hook); opt-in benchmark probe only"

ACCESSES: tuple[PrivateAccess, ...] = (
    *_group(
        "asyncio.events:Handle",
        R_PROBE,
        {
            "bot/stall_probe.py": "_run",
        },
    ),
    *_group(
        "google.genai.live:AsyncSession",
        R_RAW_SESSION,
        {
            "pipelines/_compat/genai_session.py": "_ws",
        },
    ),
    *_group(
        "pipecat.turns.user_stop.speech_timeout_user_turn_stop_strategy:SpeechTimeoutUserTurnStopStrategy",
        R_TURN,
        {
            "pipelines/_compat/turn_stop.py": "_stop_secs_warned",
        },
    ),
)
