"""One call put together: the pipeline, its control (limits, tools), the caller audio route.

``pipeline`` (``CallPipeline``, ``ProcessResources``) with ``media_transport`` (its Twilio
serializer and transport) and ``turns`` (local turn strategies, VAD parameters), ``control``
(``CallControl``),
``caller_audio`` (transport input -> local VAD -> the model), ``setup_gate``, ``watchdog``
(holding phrase, reconnect and apology when the model goes silent) and ``clip_audio`` (its
pre-recorded clips; the shipped ones in ``clips/``), ``dtmf`` (keys the caller presses: entries
for the model, mapped keys acted on). The top layer
of the library: may import every other subpackage of ``pipelines``, Pipecat and aiohttp.
"""
