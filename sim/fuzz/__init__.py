"""A property-based fuzzer (Hypothesis) for the server's public surfaces.

Drives the media-stream WebSocket (junk before ``start``, junk on a running call) and the
webhooks (``POST /twilio/voice``, ``/twilio/status``) of a real server over loopback, and judges
every answer: no unhandled exception anywhere in the process, no 5xx, no WebSocket close other
than the documented ones. ``strategies`` draws the attacks, ``targets`` sends them, ``oracle``
catches crashes, ``runner`` ties them to Hypothesis, which runs in a process of its own
(``drawer``: its memory and collections stay out of the server's), ``__main__`` is
``python -m sim.fuzz``.
Needs the ``dev`` extra (``hypothesis``).
"""
