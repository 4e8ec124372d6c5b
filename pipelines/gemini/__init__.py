"""The Gemini Live side of a call: shared clients, the Pipecat service, the wire messages.

``clients`` (one ``genai.Client`` per API version), ``service`` (``CallGeminiLive``),
``live_receive`` (parsing and unbundling server messages) and ``realtime_input`` (caller
audio as prebuilt JSON). May import Pipecat, google-genai and the top-level leaf modules
(``gemini_models``, ``ports``, ``frame_metadata``, ``aio``); not ``twilio``, ``call`` or
``personas``.
"""
