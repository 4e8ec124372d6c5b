"""The call library: one phone call as a Pipecat pipeline, Twilio Media Streams <-> Gemini Live.

It imports Pipecat, google-genai, aiohttp and their dependencies, never the server (``bot``) or
the lab (``sim``); what it needs from a server it declares in ``ports`` and takes in through
``call.pipeline.ProcessResources``. Subpackages by role, lowest first: ``audio`` (resampling,
local VAD), ``personas`` (persona files and their Live API setup), ``gemini`` (the Live API
service), ``twilio`` (serializer, transport, pacing), ``call`` (one call's pipeline and its
control), and ``_compat`` (the quarantine for patches of library internals). Leaf modules at the
top: ``gemini_models`` (the model capability table, also read by the emulator), ``ports``,
``frame_metadata`` and ``aio``.
"""
