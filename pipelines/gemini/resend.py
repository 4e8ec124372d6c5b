"""Client messages kept for the next connection: what the old one had not consumed, and the gap.

``ClientLog`` is ``connection.LiveConnection``'s memory of what it sent, so a handover or a
reconnect loses no caller word.

**Why the re-send is exact.** Every client message of a connection has an index: ``setup`` is
0, the first message after it 1, and so on (the emulator counts the same way,
``sim/emulator/resumption.py``). A ``sessionResumptionUpdate`` carries a handle and
``lastConsumedClientMessageIndex``, the index of the last client message its snapshot holds.
Resuming with the newest handle restores the session as it was after that message, so the
messages of that connection with a higher index are exactly what the resumed session lacks.
``ClientLog`` keeps those (``record``; ``covered`` drops what a new handle holds), and the caller
input that came while no connection was open (``queue_offline``, at most ``OFFLINE_MAX_CHARS``:
~10 s of 16 kHz caller audio). ``take`` hands them over in order: the old connection's
unconsumed messages, then the offline ones. A re-sent message is logged again on the new
connection under its new index, so a second handover before the next handle re-sends it again;
a handle that never came on the new connection leaves the whole log to re-send.

**Answered input is not re-sent as audio.** A handle is issued only after ``turnComplete``,
which comes after the answer has *played* (``generationComplete``, a playback delay, then
``turnComplete``), so a handover right after the model finished generating an answer resumes a
snapshot without the caller's question. Re-sending the question's audio would make the model
answer it a second time, over the first answer the caller is still hearing. So input sent
before an answer that finished generating (``answered``) is replaced by a context note
(``clientContent`` without ``turnComplete``: context, no reply) of the caller's and the model's
transcripts of those turns, and answered ``clientContent`` (the greeting instruction) goes again
without ``turnComplete``; ``take(notes=False)`` (models that refuse mid-session
``clientContent``) drops both instead. Input after that point (the caller's next words) is
re-sent as sent. An answer cut by the deadline mid-generation is not answered: its question is
re-sent and answered again.

**Not re-sent:** tool responses (a pending tool call makes the session unresumable, so the
newest handle predates the call and the resumed model calls again). ``LOG_MAX_CHARS`` bounds
the log (~35 s of caller audio without a handle; the service issues one after every turn).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from google.genai.types import Content, Part
from loguru import logger

# Unconsumed messages kept (JSON characters; ~35 s of 16 kHz PCM16 caller audio in base64).
LOG_MAX_CHARS = 1_500_000
# Caller input kept while no connection is open (~10 s of 16 kHz caller audio).
OFFLINE_MAX_CHARS = 450_000
# Transcript characters kept for a context note.
NOTE_MAX_CHARS = 4000

Kind = Literal["json", "realtime", "content"]


@dataclass(slots=True)
class Entry:
    """One client message: ``json`` (prebuilt text), ``realtime`` / ``content`` (SDK kwargs)."""

    index: int
    kind: Kind
    payload: Any
    size: int


def entry_size(kind: Kind, payload: Any) -> int:
    """Characters a message holds (JSON text, or the audio bytes of SDK kwargs)."""
    if kind == "json":
        return len(payload)
    audio = payload.get("audio") if isinstance(payload, dict) else None
    data = getattr(audio, "data", None)
    return len(data) * 4 // 3 + 64 if data else 64


class ClientLog:
    """The unconsumed client messages of one call (see the module docstring)."""

    def __init__(self) -> None:
        self.sent = 0  # messages sent on the current connection (the last one's index)
        self._entries: deque[Entry] = deque()
        self._chars = 0
        self._offline: deque[Entry] = deque()
        self._offline_chars = 0
        self._answered = 0  # input up to this index has an answer that finished generating
        self._reply_from: int | None = None  # index before the answer being generated
        self._caller_text: list[str] = []
        self._bot_text: list[str] = []
        self._note_chars = 0
        self.dropped_chars = 0  # kept input dropped over a bound (the re-send was not exact)

    # the current connection ------------------------------------------------------------

    def record(self, kind: Kind, payload: Any) -> int:
        """A message sent on the current connection; its index."""
        self.sent += 1
        size = entry_size(kind, payload)
        self._entries.append(Entry(self.sent, kind, payload, size))
        self._chars += size
        while self._chars > LOG_MAX_CHARS and len(self._entries) > 1:
            old = self._entries.popleft()
            self._chars -= old.size
            self._dropped(old.size, "no resumption handle for too long")
        return self.sent

    def count_only(self) -> int:
        """A message sent that is never re-sent (a tool response); its index."""
        self.sent += 1
        return self.sent

    @property
    def answered_index(self) -> int:
        """The index up to which input has an answer that finished generating."""
        return self._answered

    def covered(self, index: int) -> None:
        """A new handle holds the current connection's messages up to ``index``."""
        while self._entries and self._entries[0].index <= index:
            self._chars -= self._entries.popleft().size
        self._caller_text.clear()
        self._bot_text.clear()
        self._note_chars = 0

    def model_output(self) -> None:
        """The model is generating (audio, transcript or a tool call)."""
        if self._reply_from is None:
            self._reply_from = self.sent

    def model_done(self, *, complete: bool) -> None:
        """The answer finished generating (``complete``) or was interrupted."""
        if complete and self._reply_from is not None:
            self._answered = max(self._answered, self._reply_from)
        self._reply_from = None

    def caller_said(self, text: str) -> None:
        """A fragment of the caller's transcript (for a context note)."""
        self._note(self._caller_text, text)

    def bot_said(self, text: str) -> None:
        """A fragment of the model's transcript (for a context note)."""
        self._note(self._bot_text, text)

    def _note(self, into: list[str], text: str) -> None:
        if text and self._note_chars + len(text) <= NOTE_MAX_CHARS:
            into.append(text)
            self._note_chars += len(text)

    # between connections ---------------------------------------------------------------

    def queue_offline(self, kind: Kind, payload: Any) -> bool:
        """Keep caller input that came while no connection was open; False if not kept."""
        size = entry_size(kind, payload)
        self._offline.append(Entry(0, kind, payload, size))
        self._offline_chars += size
        while self._offline_chars > OFFLINE_MAX_CHARS and len(self._offline) > 1:
            old = self._offline.popleft()
            self._offline_chars -= old.size
            self._dropped(old.size, f"offline longer than the {OFFLINE_MAX_CHARS}-char buffer")
        return True

    def pop_offline(self) -> Entry | None:
        """The oldest input kept while offline, removed; None when there is none."""
        if not self._offline:
            return None
        entry = self._offline.popleft()
        self._offline_chars -= entry.size
        return entry

    def take(self, *, resumed: bool, notes: bool) -> list[Entry]:
        """What the next connection needs re-sent, in order; resets the per-connection state.

        Args:
            resumed: The next connection resumes with the newest handle. A fresh session is
                re-seeded by the service from the call's context: only caller input the
                model had not answered is re-sent (no ``clientContent``).
            notes: The model takes mid-session ``clientContent`` (history, context notes).

        Returns:
            The answered history again without ``turnComplete`` and a context note of the
            answered turns' transcripts (both only if ``resumed`` and ``notes``), then the
            unanswered messages as sent. The offline input stays queued (``pop_offline``).
        """
        answered = [e for e in self._entries if e.index <= self._answered]
        entries = [e for e in self._entries if e.index > self._answered]
        logger.debug(
            f"re-send: {len(self._entries)} unconsumed, {len(answered)} answered, "
            f"{len(self._offline)} kept offline; transcripts {self._note_chars} chars"
        )
        if not resumed:
            entries = [e for e in entries if e.kind != "content"]
        elif notes and answered:
            # Answered history (the greeting instruction) is context again, without a reply.
            again = [
                Entry(e.index, e.kind, {**e.payload, "turn_complete": False}, e.size)
                for e in answered
                if e.kind == "content"
            ]
            note = self._note_entry()
            entries[:0] = again + ([note] if note is not None else [])
        elif answered:
            logger.debug(f"{len(answered)} answered client messages not re-sent (no note)")
        self.sent = 0
        self._entries.clear()
        self._chars = 0
        self._answered = 0
        self._reply_from = None
        self._caller_text.clear()
        self._bot_text.clear()
        self._note_chars = 0
        return entries

    def _note_entry(self) -> Entry | None:
        caller = "".join(self._caller_text).strip()
        bot = "".join(self._bot_text).strip()
        if not caller and not bot:
            return None
        turns = []
        if caller:
            turns.append(Content(role="user", parts=[Part(text=caller)]))
        if bot:
            turns.append(Content(role="model", parts=[Part(text=bot)]))
        return Entry(0, "content", {"turns": turns, "turn_complete": False}, len(caller + bot))

    def _dropped(self, size: int, why: str) -> None:
        if not self.dropped_chars:
            logger.warning(f"caller input kept for a reconnect dropped: {why}")
        self.dropped_chars += size

    @property
    def pending(self) -> int:
        """Messages kept (unconsumed and offline)."""
        return len(self._entries) + len(self._offline)
