"""Outbound calls: placing them through Twilio's REST API, answering machines, status, campaigns.

- ``placing``: what a dial asks for (number, persona, parameters), its checks, and the Twilio
  ``Calls.json`` request it becomes (our voice webhook as ``Url``, status callbacks, synchronous
  answering-machine detection as the persona says).
- ``answer``: the voice webhook's answer to an outbound call a machine picked up.
- ``status``: ``POST /twilio/outbound/status``, Twilio's signed status callbacks, each written
  as one ``call_status_events`` row (``bot.records``); ``history`` reads them back for
  ``voicebot calls``.
- ``http_api``: ``POST /calls`` on the operations listener (bearer ``VOICEBOT_OPS_TOKEN``).
- ``campaign``: the scheduler of a campaign (concurrency and calls-per-second limits);
  ``dial_cmd`` and ``campaign_cmd``: the ``voicebot dial`` and ``voicebot campaign`` commands.

May import ``bot`` modules (settings, records, twilio_rest, twilio_security) and
``pipelines.personas``; never ``sim``.
"""
