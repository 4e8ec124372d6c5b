"""Benchmarks, run by hand: ``python -m sim.bench`` (``make bench``) and its helpers.

Holds the capacity benchmark (``capacity``, run as ``python -m sim.bench``: load levels against
``voicebot serve`` and the bare relay baseline, pinned to cores), the processes it starts and
samples (``procs``), the emulator's own capacity (``emulator_bench``, ``python -m
sim.bench.emulator_bench``) and the resampling round-trip quality (``audio_quality``, ``python -m
sim.bench.audio_quality``). It may import ``sim.caller``, ``sim.emulator`` and the
``pipelines`` code it measures; it drives the server only as a separate ``voicebot`` process,
never by importing ``bot``. Nothing else imports it, except the tests.
"""
