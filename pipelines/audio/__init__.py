"""Audio building blocks: the streaming FIR resampler and the shared-session Silero VAD.

Imports Pipecat, numpy and the standard library only; nothing else of ``pipelines``.
"""
