"""One call put together: the pipeline, its control (limits, tools), the caller audio route.

``pipeline`` (``CallPipeline``, ``ProcessResources``), ``control`` (``CallControl``),
``caller_audio`` (transport input -> local VAD -> the model) and ``setup_gate``. The top layer
of the library: may import every other subpackage of ``pipelines``, Pipecat and aiohttp.
"""
