"""Audio building blocks: the streaming FIR resampler and the batched local VAD.

``resampling`` (``FirStreamResampler``), ``batched_vad`` (``BatchedSileroVAD``: one Silero model
run for every live call's windows at once, ``VADStream`` per call) and ``speech_turns``
(``SpeechTurns``: a call's speech start/stop decisions from the scores). Imports Pipecat,
numpy, onnxruntime, loguru and the standard library only; nothing else of ``pipelines``.
"""
