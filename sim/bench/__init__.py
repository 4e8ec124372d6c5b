"""Benchmarks, run by hand: ``python -m sim.bench`` (``make bench``) and its helpers.

Holds the capacity benchmark on phone lines (``capacity``, run as ``python -m sim.bench``: load
levels against ``voicebot serve`` and the bare relay baseline, pinned to cores), its parts (the
lines and scenarios, ``lines``; one load level and a server's levels, ``levels``; the printed
report, ``table``; the processes it starts and samples, ``procs``), the project's own relay
baseline (``relay_baseline``, a script run as its own process), calls held by ``voicebot serve
--workers 2`` on 2 cores against one process on 1 core (``scale``, ``python -m
sim.bench.scale``), what relaying a stream to the process that admitted its call costs
(``relay_cost``, ``python -m sim.bench.relay_cost``), the emulator's own capacity
(``emulator_bench``, ``python -m sim.bench.emulator_bench``) and the resampling round-trip
quality (``audio_quality``, ``python -m sim.bench.audio_quality``). It may import
``sim.caller``, ``sim.loadtest``, ``sim.emulator`` and the ``pipelines`` code it measures; it
drives the server only as a separate ``voicebot`` process, never by importing ``bot`` (the
stage sampler's counts file, written by ``bot.stage_profile`` under ``VOICEBOT_PROFILE``, is read
by ``stage_table``). Nothing else imports it, except the tests.
"""
