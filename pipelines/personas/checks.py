"""Persona checks against the model capability table (``pipelines/gemini_models.py``).

Each check yields an ``Issue`` naming the field path; the loader adds file and line. The same
table drives the emulator, so a persona that passes here is a setup the emulator accepts.
"""

from __future__ import annotations

import difflib
import wave
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipelines import gemini_models
from pipelines.personas.schema import Persona, template_variables
from pipelines.personas.texts import SHIPPED_CLIP_LANGUAGES, base_language
from pipelines.personas.tools import model_issues as http_tool_issues


@dataclass(frozen=True)
class Issue:
    """One finding about a persona.

    Attributes:
        path: Field path, e.g. ``("session", "thinking", "level")``.
        message: ``got …, expected …`` plus the fix.
        level: ``error`` stops the load; ``warning`` and ``info`` are logged.
    """

    path: tuple[str | int, ...]
    message: str
    level: Literal["error", "warning", "info"] = "error"


def did_you_mean(value: str, choices: Sequence[str]) -> str:
    """``"; did you mean 'X'?"`` for the closest choice, or ``""``."""
    lowered = {c.lower(): c for c in choices}
    if value.lower() in lowered and lowered[value.lower()] != value:
        return f"; did you mean {lowered[value.lower()]!r}?"
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    if not close:
        close = [
            lowered[m] for m in difflib.get_close_matches(value.lower(), lowered, n=1, cutoff=0.6)
        ]
    return f"; did you mean {close[0]!r}?" if close else ""


def one_of(choices: Sequence[str], limit: int = 8) -> str:
    """``one of A, B, C, …`` (the list cut after ``limit`` items)."""
    shown = ", ".join(choices[:limit])
    return f"one of {shown}{', …' if len(choices) > limit else ''}"


def check_persona(persona: Persona) -> list[Issue]:
    """Every capability finding for ``persona`` (errors, warnings and info notes)."""
    return list(_check(persona))


def _check(p: Persona) -> Iterator[Issue]:
    yield from _check_templates(p)
    yield from _check_runtime_rules(p)
    yield from _check_clips(p)
    model = gemini_models.bare_model_name(p.model)
    spec = gemini_models.lookup(model)
    if spec is None:
        if model in gemini_models.RETIRED_MODELS:
            yield Issue(
                ("model",),
                f"got {model!r}, which was shut down on the Developer API (2025-12-09); expected "
                f"a current Live model such as {gemini_models.DEFAULT_MODEL!r}",
            )
        else:
            names = list(gemini_models.MODELS)
            yield Issue(
                ("model",), f"got {model!r}, expected {one_of(names)}" + did_you_mean(model, names)
            )
        return
    if p.voice not in spec.voices:
        yield Issue(
            ("voice",),
            f"got {p.voice!r}, expected {one_of(sorted(spec.voices))}"
            + did_you_mean(p.voice, spec.voices),
        )
    if p.language is not None and spec.native_audio:
        yield Issue(
            ("language",),
            f"{model} is a native-audio model and chooses the spoken language itself; "
            f"{p.language!r} is sent but has no effect (say the language in system_instruction)",
            "warning",
        )
    yield from _check_features(p, spec)
    yield from _check_thinking(p, spec)
    for path in p.v1alpha_features():
        yield Issue(
            tuple(path.split(".")),
            f"{model} takes this feature only on the v1alpha API; this persona's sessions use "
            "api_version v1alpha",
            "info",
        )
    if spec.status != "stable":
        yield Issue(("model",), f"{model} is a {spec.status} model", "info")


def _check_features(p: Persona, spec: gemini_models.ModelSpec) -> Iterator[Issue]:
    model = spec.name
    if p.session.affective_dialog and spec.affective_dialog == "no":
        yield Issue(
            ("session", "affective_dialog"),
            f"got true, expected false: {model} does not support affective dialog "
            "(use a gemini-2.5-flash-native-audio model, or remove the key)",
        )
    proactive = p.session.proactive_audio
    if proactive is not None:
        if spec.proactive_audio == "no":
            yield Issue(
                ("session", "proactive_audio"),
                f"got {str(proactive).lower()}, expected no value: {model} does not support "
                "proactive audio (remove the key)",
            )
        elif spec.proactive_audio == "always" and not proactive:
            yield Issue(
                ("session", "proactive_audio"),
                f"got false, expected true or no value: proactive audio is always on for "
                f"{model} and it rejects false (remove the key)",
            )
    if p.tools.end_call or p.tools.transfer_call:
        if not spec.sync_tools and not spec.async_tools:
            yield Issue(("tools",), f"got tools, expected none: {model} takes no tools")
    for path, message in http_tool_issues(p.http_tools, spec):  # pipelines/personas/tools.py
        yield Issue(path, message)


def _check_thinking(p: Persona, spec: gemini_models.ModelSpec) -> Iterator[Issue]:
    thinking = p.session.thinking
    model = spec.name
    path = ("session", "thinking")
    if spec.thinking == "none":
        if thinking is not None:
            yield Issue(path, f"got a thinking setting, expected none: {model} does not think")
        return
    if spec.thinking == "level":
        if thinking is None:
            if spec.thinking_required:
                levels = ", ".join(v.lower() for v in spec.thinking_levels)
                yield Issue(
                    path,
                    f"got no thinking level, expected thinking: {{level: …}} with one of "
                    f"{levels}: {model} requires a thinking level",
                )
            return
        if thinking.budget is not None:
            yield Issue(
                (*path, "budget"),
                f"got budget {thinking.budget}, expected level: {model} takes a thinking "
                "level, not a token budget (e.g. level: low)",
            )
        elif thinking.level not in spec.thinking_levels:
            levels = ", ".join(v.lower() for v in spec.thinking_levels)
            yield Issue(
                (*path, "level"),
                f"got {str(thinking.level).lower()!r}, expected one of {levels} for {model}",
            )
        return
    if thinking is not None and thinking.level is not None:
        yield Issue(
            (*path, "level"),
            f"got level {thinking.level.lower()!r}, expected budget: {model} takes a thinking "
            "token budget, not a level (e.g. budget: 1024; 0 turns thinking off)",
        )


def _check_templates(p: Persona) -> Iterator[Issue]:
    known = sorted(p.template_names())
    texts: list[tuple[tuple[str | int, ...], str | None]] = [
        (("system_instruction_file",) if p.system_instruction_file else ("system_instruction",),
         p.system_instruction),
        (("greeting", "text"), p.greeting.text),
    ]  # fmt: skip
    for path, text in texts:
        if not text:
            continue
        try:
            names = template_variables(text)
        except ValueError as e:
            yield Issue(path, str(e))
            continue
        for name in names:
            if name not in known:
                hint = did_you_mean(name, known)
                if name.startswith("custom.") and not hint:
                    hint = f"; declare it under custom_parameters: {{{name[7:]}: default}}"
                yield Issue(
                    path,
                    f"got unknown template variable ${{{name}}}, expected {one_of(known, 12)}"
                    + hint,
                )


def _check_runtime_rules(p: Persona) -> Iterator[Issue]:
    detection = p.session.activity_detection
    if detection.disabled and not p.barge_in.local_vad:
        yield Issue(
            ("session", "activity_detection", "disabled"),
            "got true with barge_in.local_vad false, expected local_vad: true: with Gemini's "
            "activity detection off, the local VAD must mark when the caller speaks",
        )
    if detection.disabled and p.audio_stream_end_silence_secs is not None:
        yield Issue(
            ("audio_stream_end_silence_secs",),
            f"got {p.audio_stream_end_silence_secs:g}, expected null: audioStreamEnd is only "
            "sent while Gemini's automatic activity detection is on",
        )
    if p.audio_stream_end_silence_secs is not None and not p.barge_in.local_vad:
        yield Issue(
            ("audio_stream_end_silence_secs",),
            f"got {p.audio_stream_end_silence_secs:g} with barge_in.local_vad false, expected "
            "local_vad: true: the local VAD tells when the caller speaks again, so the paused "
            "audio stream can resume",
        )
    if not p.numbers and not p.default:
        yield Issue(
            ("numbers",),
            "got no numbers on a persona that is not the default, expected at least one: no "
            "call can reach this persona",
            "warning",
        )
    limits = p.limits
    longest = limits.max_call_secs
    if p.session.context_window_compression is None and (
        longest is None or longest > gemini_models.AUDIO_SESSION_LIMIT_SECS
    ):
        how_long = "no limits.max_call_secs" if longest is None else f"max_call_secs {longest:g}"
        yield Issue(
            ("session", "context_window_compression"),
            f"got none with {how_long}, expected "
            "{trigger_tokens: N}: without compression the Live API ends an audio session "
            "at 15 minutes, and the call then goes on in a fresh session that keeps only the "
            "transcript of what was said",
            "info",
        )
    if limits.idle_timeout_secs is not None and limits.idle_max_reprompts > 0:
        if not (p.texts.idle_reprompt or "").strip():  # texts.* are checked in ``texts``
            yield Issue(
                ("limits", "idle_reprompt_text"),
                "got an empty text, expected the words of the re-prompt",
            )
    transfer = p.tools.transfer_call
    if transfer is not None and transfer.to in p.numbers:
        yield Issue(
            ("tools", "transfer_call", "to"),
            f"got {transfer.to!r}, expected a number this persona does not answer itself "
            "(a transfer to it would loop)",
        )


CLIP_RATES_HZ = (8000, 16000, 24000)


def clip_problem(path: Path) -> str | None:
    """What is wrong with a watchdog clip file (``None``: a mono 16-bit 8/16/24 kHz WAV)."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.getnframes()
    except FileNotFoundError:
        return "no such file"
    except (OSError, EOFError, wave.Error) as e:
        return f"not a readable WAV file ({e})"
    found = []
    if channels != 1:
        found.append(f"{channels} channels")
    if width != 2:
        found.append(f"{8 * width}-bit samples")
    if rate not in CLIP_RATES_HZ:
        found.append(f"{rate} Hz")
    if not frames:
        found.append("no audio")
    return ", ".join(found) or None


def _check_clips(p: Persona) -> Iterator[Issue]:
    base = base_language(p.language)
    unset = [f for f in ("holding_clip", "apology_clip") if getattr(p.watchdog, f) is None]
    if base not in SHIPPED_CLIP_LANGUAGES and unset:
        yield Issue(
            ("watchdog",),
            f"got no {' or '.join(unset)} for language {p.language!r}, and the shipped clips "
            "are English and Spanish only: a caller would hear the English ones in trouble; "
            "expected WAVs recorded in that language (watchdog.holding_clip, apology_clip)",
            "warning",
        )
    for field, path in zip(("holding_clip", "apology_clip"), p.clip_paths(), strict=True):
        problem = clip_problem(path)
        if problem is None:
            continue
        given = getattr(p.watchdog, field)
        yield Issue(
            ("watchdog", field),
            f"got {given or str(path)!r} ({path}: {problem}), expected a mono 16-bit WAV at "
            "8, 16 or 24 kHz, relative to the persona file. Fix: convert it, e.g. "
            "`sox IN.wav -r 8000 -c 1 -b 16 OUT.wav`, or remove the key to use the shipped clip",
        )
