"""Caller audio as a Live API ``realtime_input`` message, built without the SDK's converters."""

from __future__ import annotations

import base64


def realtime_audio_message(audio: bytes, sample_rate: int) -> str:
    """The Live API ``realtime_input`` message for one chunk of 16-bit PCM.

    The exact text google-genai's ``send_realtime_input(audio=Blob(...))`` sends on a Gemini API
    (not Vertex) session, built without its pydantic validation and converters (~40 us per
    chunk); ``tests/test_caller_audio.py`` compares the two.
    """
    data = base64.urlsafe_b64encode(audio).decode("ascii")
    return (
        '{"realtime_input": {"audio": {"data": "'
        + data
        + f'", "mime_type": "audio/pcm;rate={sample_rate}"}}}}}}'
    )
