"""Stand-ins for the outside world, and the lab built on them.

``caller/`` is the simulated Twilio caller, ``emulator/`` the Gemini Live API emulator,
``loadtest/`` many callers and their report, ``bench/`` the benchmarks run by hand, and
``testing`` what test suites need (the running server and emulator, a call helper, polling);
``ports`` loopback ports for servers started at a known address; ``postgres`` a throwaway
PostgreSQL server from the system's binaries; ``records_bench`` the call-records benchmark.
The stand-ins import neither ``bot`` nor each other (the emulator reads the model table in
``pipelines``); ``loadtest`` builds on ``caller``; ``bench`` on ``caller`` and ``emulator``; only
``testing`` and ``records_bench`` import ``bot``, to run the server's own code in-process.
``tests/test_sim_layout.py`` checks these rules.
"""
