"""Frame metadata keys the Twilio transport and the Gemini service share (bridge latency).

A leaf module: both ``pipelines.twilio`` and ``pipelines.gemini`` stamp or read these keys, so
they live here rather than in either subpackage.
"""

# Monotonic time the audio entered the server (a Twilio or a model message).
RX_KEY = "bridge_rx_at"
# On batched caller audio: the arrival time of each Twilio message in it.
RX_EACH_KEY = "bridge_rx_each"
