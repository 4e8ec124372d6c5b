"""Gemini Live API emulator: the back end of ``make run`` without a key and of every test.

``LiveEmulator`` serves BidiGenerateContent over TLS on loopback for the unmodified
google-genai SDK and Pipecat's ``GeminiLiveLLMService``.
"""

from sim.emulator.config import EmulatorConfig, FaultPlan, ToolScript, parse_faults
from sim.emulator.server import LiveEmulator

__all__ = ["EmulatorConfig", "FaultPlan", "LiveEmulator", "ToolScript", "parse_faults"]
