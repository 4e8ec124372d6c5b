"""google-genai's Live types are built where the server starts, not in the first call."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

# In a fresh interpreter: a goAway's model is not built until first used, build_live_types
# builds it with the rest of what the Live messages reach, and a second call has nothing to do.
PROBE = """
from google.genai import types
from pipelines.gemini.live_types import build_live_types
before = types.LiveServerGoAway.__pydantic_complete__
built = build_live_types()
reached = (types.LiveServerGoAway, types.SpeechConfig, types.LiveServerSessionResumptionUpdate,
           types.SessionResumptionConfig, types.Part, types.LiveServerToolCall)
print(before, built > 50, all(m.__pydantic_complete__ for m in reached), build_live_types())
"""


def test_the_live_types_a_call_meets_are_built_once_ahead_of_it():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "True", "0"], done.stdout
