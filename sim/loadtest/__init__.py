"""The load tester: many simulated callers against one server, and what they felt.

Holds the scenario files and their loader (``scenarios/``, ``scenario``), the run itself
(``runner``: ramp, concurrency, one shared frame clock, worker processes), the host-side
measurements (``host_load``: CPU sampling, GC policy), the report and SLO checks (``report``) and
the ``voicebot loadtest`` command (``cmd``). It may import ``sim.caller`` and third-party
libraries; never ``bot``, ``pipelines``, ``sim.emulator`` or ``sim.bench``.
"""
