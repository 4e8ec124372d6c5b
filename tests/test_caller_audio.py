"""The caller-audio fast path sends exactly what google-genai would (no sockets)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from google.genai import _common, types
from google.genai import _live_converters as converters

from pipelines.gemini.realtime_input import realtime_audio_message

pytestmark = pytest.mark.unit


def _sdk_message(audio: bytes, rate: int) -> str:
    """What ``AsyncSession.send_realtime_input(audio=Blob(...))`` sends (Gemini API)."""
    params = types.LiveSendRealtimeInputParameters.model_validate(
        {"audio": types.Blob(data=audio, mime_type=f"audio/pcm;rate={rate}")}
    )
    body = converters._LiveSendRealtimeInputParameters_to_mldev(from_object=params)
    body = _common.encode_unserializable_types(_common.convert_to_dict(body))
    return json.dumps({"realtime_input": body})


@pytest.mark.parametrize("rate", [8000, 16000])
def test_realtime_audio_message_equals_the_sdks(rate: int) -> None:
    rng = np.random.default_rng(7)
    # Random bytes hit every base64 character, including the URL-safe '-' and '_'.
    audio = rng.integers(-32768, 32767, 640, dtype=np.int16).tobytes()
    fast = realtime_audio_message(audio, rate)
    assert fast == _sdk_message(audio, rate)
    assert "-" in fast or "_" in fast
