"""The Twilio side of a call: the Media Streams serializer and the aiohttp WebSocket transport.

``serializer`` (``TwilioSerializer``; ``input_limits``: the JSON parser and the audio and
message rate limits; ``rest_hang_up``), ``transport`` (ties the pieces together) with
``transport_input``, ``transport_output`` and ``transport_client`` (the shared socket, marks,
latency), ``output_queue``, ``output_sender`` and ``pacing`` (real-time bot audio),
``barge_in`` (audio an interruption cuts) and ``bot_speaking`` (Bot*SpeakingFrame pairs).
May import Pipecat, aiohttp, ``pipelines.audio``, ``pipelines._compat`` and the top-level leaf
modules; not ``gemini``, ``call`` or ``personas``.
"""
