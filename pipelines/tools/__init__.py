"""Persona HTTP tools at call time: argument checks, the HTTP request, the call's tool log.

A persona declares them in YAML (``pipelines.personas.tools``); here they run:
``json_schema`` checks a parameters schema against the subset of JSON Schema the Live API
accepts (at load) and the model's arguments against it (at call time); ``http_call`` makes the
request on the server's shared aiohttp session, with retries inside the tool's time budget;
``call_tools`` registers a call's tools on its Live service and keeps what each call did (for
the call record and the metrics).

May import ``pipelines.personas`` and ``pipelines.ports``; never ``bot`` or ``sim``, and this
``__init__`` imports nothing, so ``pipelines.personas`` can use ``json_schema`` without a cycle.
"""
