"""Quarantine for what touches library internals (Pipecat, google-genai) beyond public APIs.

Today it holds ``pipecat_speedups`` (hot-path patches of Pipecat 1.14). A later step of issue 11
moves every remaining private access here, with a start-up check that the installed versions
are the pinned ones and every touched attribute exists, each access naming the upstream change
that would retire it. May import Pipecat and google-genai only.
"""
