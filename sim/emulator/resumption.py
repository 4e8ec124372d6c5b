"""Session resumption like the service's: handles, their snapshots and who may resume them.

- A handle is issued after every completed turn, never while the model generates or a tool
  call is pending (then ``resumable: false`` and no handle).
- Each handle resumes exactly the conversation it was issued for (a snapshot).
- ``lastConsumedClientMessageIndex`` is the 0-based index, on this connection, of the last
  client message the snapshot includes (``setup`` is message 0). The SDK's docstring says the
  service sends it only for ``sessionResumption.transparent``, which the SDK allows on Vertex
  only; issue 10 reports the Developer API sending it, so the emulator always does.
- Resuming while the connection the handle came from is still open is refused with 1011
  (the reference's "Errors and limits": the old socket must be closed first).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.emulator.session import LiveSession

# The reason is not documented; the service's generic 1011 text.
RESUME_WHILE_OPEN_REASON = "Internal error encountered."


def update_message(handle: str | None, last_index: int | None = None) -> bytes:
    """``sessionResumptionUpdate``: resumable with a handle when idle, else not resumable."""
    if not handle:
        return b'{"sessionResumptionUpdate":{"resumable":false}}'
    body: dict[str, Any] = {"newHandle": handle, "resumable": True}
    if last_index is not None:
        body["lastConsumedClientMessageIndex"] = str(last_index)  # int64: a JSON string
    return json.dumps({"sessionResumptionUpdate": body}, separators=(",", ":")).encode()


def still_open(session: LiveSession | None) -> bool:
    """Whether the connection a handle came from is still open."""
    return session is not None and session.close_code is None and not session.ws.closed
