"""The one private access of google-genai's Live session: its raw WebSocket, for the hot paths.

``AsyncSession`` has public ``send_realtime_input`` / ``receive``, but both run every message
through pydantic validation and the SDK's converters (~40 us per caller-audio chunk sent,
~65 us per model-audio chunk received, ~70 messages a second per call). The Live service
(``pipelines.gemini``) sends caller audio as prebuilt JSON text and parses model audio without
validation; both need the session's socket, ``AsyncSession._ws`` (a ``websockets``
``ClientConnection``). Only this module touches it.

Retire when: google-genai exposes a public raw send/receive on ``AsyncSession`` (or a faster
public decode in ``receive``). ``problems()`` runs in ``pipelines._compat.check()``.
May import google-genai and websockets only.
"""

from __future__ import annotations

import inspect
from typing import Any

import websockets
from google.genai import errors
from google.genai.live import AsyncSession

# The attribute of AsyncSession this module reads (set in AsyncSession.__init__).
WS_ATTRIBUTE = "_ws"


def problems() -> list[str]:
    """One line if the installed ``AsyncSession`` no longer keeps its socket in ``_ws``."""
    try:
        source = inspect.getsource(AsyncSession.__init__)
    except (OSError, TypeError) as e:  # no source installed: cannot tell, assume changed
        return [f"google.genai.live:AsyncSession.__init__: source unavailable ({e})"]
    if f"self.{WS_ATTRIBUTE} =" not in source:
        return [
            f"google.genai.live:AsyncSession no longer sets {WS_ATTRIBUTE}; used in "
            "pipelines/_compat/genai_session.py (raw Live API send/receive)"
        ]
    return []


async def send_text(session: AsyncSession, text: str) -> None:
    """Send one prebuilt JSON message on the session's socket, as the SDK's senders do."""
    await session._ws.send(text)


async def receive_raw(session: AsyncSession) -> bytes | str:
    """The next server message, undecoded.

    Raises:
        google.genai.errors.APIError: The socket closed, with the close code and reason,
            exactly as ``AsyncSession.receive`` raises it.
    """
    ws: Any = session._ws
    try:
        return await ws.recv(decode=False)
    except websockets.ConnectionClosed as e:
        if e.rcvd:
            code, reason = e.rcvd.code, e.rcvd.reason
        else:
            code = 1006
            reason = websockets.frames.CLOSE_CODE_EXPLANATIONS.get(code, "Abnormal closure.")
        errors.APIError.raise_error(code, reason, None)
        raise  # unreachable: raise_error always raises


def is_open(session: AsyncSession) -> bool:
    """Whether the session's socket is still open (a pre-opened one may have been closed)."""
    ws: Any = session._ws
    return ws.state is websockets.protocol.State.OPEN
