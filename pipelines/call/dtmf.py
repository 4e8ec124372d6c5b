"""Keys the caller presses: batched into entries for the model, or mapped keys acted on.

``KeypadEntries`` takes each key of one call as the transport input reads Twilio's ``dtmf``
message (``transport_input.AiohttpWebsocketInputTransport.dtmf_route``) and follows the
persona's ``dtmf:`` section (``pipelines.personas.dtmf.Dtmf``):

- keys are collected like a person typing a PIN; an entry ends at the terminator key (kept in
  it), at ``max_digits`` keys, or after ``inter_digit_timeout_secs`` (times the call's time
  scale) without a key, and goes to the model as one short caller text (``Dtmf.entry_text``:
  "… keys: 1 2 3 4 #"), so the model answers it like a caller turn;
- a key the persona maps, pressed with no entry pending, is acted on at once without the
  model: ``transfer`` (the ``<Dial>`` redirect of the ``transfer_call`` tool) or ``end_call``
  (the goodbye and hang-up of ``end_call``).

How an entry reaches the model (realtime text, kept and re-sent over a handover) is the
caller's business (``send``); what the actions do is ``pipelines.call.control.CallControl``'s.
The keys themselves never appear in log text: a PIN is personal data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from loguru import logger

from pipelines.aio import cancel_and_wait
from pipelines.personas.dtmf import KEYPAD, Dtmf, KeyAction

SendEntry = Callable[[str], Awaitable[bool]]
# How long an entry typed before the model connection is live may wait for it (real time).
SEND_WAIT_SECS = 3.0
# Keys faster than a phone keypad can send them (a tone and a gap of ~40 ms each) are dropped:
# a stream of scripted keys must not become a stream of billed model turns.
MAX_KEYS_PER_SEC = 10.0
KEYS_BURST = 20.0
# An entry finished while the caller is talking waits for them to stop (at most this long, real
# time): the model would otherwise answer the keys over the caller's words.
SPEECH_WAIT_SECS = 8.0


class KeyActions(Protocol):
    """What mapped keys do (``pipelines.call.control.CallControl``)."""

    @property
    def ending(self) -> str | None:
        """Why the call is ending, once it is (entries are then not sent)."""

    def key_pressed(self) -> None:
        """The caller pressed a key (activity: the idle limit restarts)."""

    async def transfer_now(self, to: str, announcement: str | None, reason: str) -> bool:
        """Hand the call to ``to`` at once; False if it cannot be."""
        ...

    async def end_now(self, goodbye: str | None, reason: str) -> bool:
        """End the call (after ``goodbye``, if any); False if it is ending already."""
        ...


class KeypadEntries:
    """One call's keys (see the module docstring).

    Args:
        settings: The persona's ``dtmf:`` section.
        send: Sends an entry's text to the model as the caller's input; False if neither
            sent nor kept for the next connection (``CallGeminiLive.caller_text``).
        connected: Set while a model connection is live: an entry that could not be sent
            (the session still being set up) is sent once it is, within ``SEND_WAIT_SECS``.
        on_sent: Called when an entry was sent: a reply is due (the model watchdog).
        actions: Where mapped keys act and key presses count as caller activity.
        time_scale: Multiplies the inter-digit timeout (tests and demos).
        caller_quiet: Set while the caller is not speaking (the local VAD's view); an entry
            waits for it, up to ``SPEECH_WAIT_SECS``. None: entries go at once.
    """

    def __init__(
        self,
        settings: Dtmf,
        *,
        send: SendEntry,
        connected: asyncio.Event,
        on_sent: Callable[[], None],
        actions: KeyActions,
        time_scale: float = 1.0,
        caller_quiet: asyncio.Event | None = None,
    ) -> None:
        self._settings = settings
        self._caller_quiet = caller_quiet
        self._send = send
        self._connected = connected
        self._on_sent = on_sent
        self._actions = actions
        self._timeout_secs = settings.inter_digit_timeout_secs * time_scale
        self._keys: list[str] = []
        self._deadline = 0.0
        self._timer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_delivery: asyncio.Task[None] | None = None
        self._stopped = False
        self._allowance = KEYS_BURST
        self._allowance_at = 0.0
        self.entries_sent = 0
        self.keys_dropped = 0

    @property
    def pending(self) -> str:
        """The keys of the entry being typed (for tests; never log them)."""
        return "".join(self._keys)

    async def __call__(self, key: str) -> None:
        """One key the caller pressed (``0``-``9``, ``*``, ``#``)."""
        s = self._settings
        if self._stopped or not s.enabled or key not in KEYPAD:
            return
        loop = asyncio.get_running_loop()
        if not self._allowed(loop.time()):
            return
        self._actions.key_pressed()
        action = s.keys.get(key) if not self._keys else None
        if action is not None:
            self._spawn(self._act(action), "dtmf:action")  # a goodbye may wait for quiet
            return
        self._keys.append(key)
        if key == s.terminator or len(self._keys) >= s.max_digits:
            self._flush()
            return
        self._deadline = loop.time() + self._timeout_secs
        if self._timer is None or self._timer.done():
            self._timer = loop.create_task(self._expire(), name="dtmf:inter-digit")

    def _allowed(self, now: float) -> bool:
        """A token bucket of ``MAX_KEYS_PER_SEC`` (burst ``KEYS_BURST``); False: dropped."""
        if self._allowance_at:
            elapsed = now - self._allowance_at
            self._allowance = min(KEYS_BURST, self._allowance + elapsed * MAX_KEYS_PER_SEC)
        self._allowance_at = now
        if self._allowance >= 1.0:
            self._allowance -= 1.0
            return True
        if not self.keys_dropped:
            logger.warning("DTMF: keys came faster than a phone sends them; the excess is dropped")
        self.keys_dropped += 1
        return False

    async def stop(self) -> None:
        """The call ended: keys still pending are dropped; tasks are cancelled and awaited."""
        self._stopped = True
        self._keys.clear()
        await cancel_and_wait(self._timer, *self._tasks)

    async def _expire(self) -> None:
        """End the entry once no key came for the inter-digit timeout."""
        loop = asyncio.get_running_loop()
        while self._keys:
            delay = self._deadline - loop.time()
            if delay <= 0:
                self._flush()
                return
            await asyncio.sleep(delay)

    def _flush(self) -> None:
        """Hand the pending entry to the model (in a task: the receive loop never waits)."""
        keys, self._keys = "".join(self._keys), []
        if not keys:
            return
        text = self._settings.entry_text(keys)
        self._last_delivery = self._spawn(self._deliver(text, self._last_delivery), "dtmf:entry")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _deliver(self, text: str, previous: asyncio.Task[None] | None) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])  # entries reach the model in the order typed
        quiet = self._caller_quiet
        if quiet is not None and not quiet.is_set():
            try:
                await asyncio.wait_for(quiet.wait(), SPEECH_WAIT_SECS)
            except TimeoutError:
                pass  # a caller who talks on and on still gets the keys answered
        if self._actions.ending is not None:
            return
        try:
            sent = await self._send(text)
            if not sent and not self._connected.is_set():
                # The session is still being set up, or reconnecting: send it once it is up.
                await asyncio.wait_for(self._connected.wait(), SEND_WAIT_SECS)
                sent = await self._send(text)
        except TimeoutError:
            sent = False
        except Exception:
            logger.exception("DTMF: sending an entry to the model failed")
            return
        if sent:
            self.entries_sent += 1
            self._on_sent()
        else:
            logger.warning("DTMF: an entry of keys was not sent: the model session is not up")

    async def _act(self, action: KeyAction) -> None:
        reason = f"caller key mapped to {action.action}"
        if action.action == "transfer":
            assert action.to is not None  # checked at load (KeyAction)
            done = await self._actions.transfer_now(action.to, action.say, reason)
        else:
            done = await self._actions.end_now(action.say, reason)
        if not done:
            logger.warning(f"DTMF: a key mapped to {action.action} was pressed; not possible now")
