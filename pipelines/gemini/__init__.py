"""The Gemini Live side of a call: shared clients, the connection, the service, the wire messages.

``clients`` (one ``genai.Client`` per API version), ``connection`` (``LiveConnection``: the
session on google-genai's public API, resumption, GoAway handover, reconnects; its connection
task in ``connection_loop``), ``service`` (``CallGeminiLive``: our Pipecat ``LLMService``
turning server messages into frames), ``caller_input`` (caller audio, audioStreamEnd, activity
windows), ``text_input`` (the initial history, instructions, typed entries), ``transcripts``
(transcript frames, usage), ``live_receive`` (parsing and unbundling server messages) and
``realtime_input`` (caller audio as prebuilt JSON), ``live_types`` (google-genai's Live
types built at start, not in the first call). May import Pipecat,
google-genai, ``pipelines._compat`` and the top-level leaf modules (``gemini_models``,
``ports``, ``frame_metadata``, ``aio``); not ``twilio``, ``call`` or ``personas``.
"""
