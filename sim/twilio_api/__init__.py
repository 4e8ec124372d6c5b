"""A stand-in for Twilio's REST API and the phone network behind it: outbound calls offline.

``server`` serves the Calls resource the way Twilio does (``POST Calls.json`` to place a call,
``GET Calls/{sid}.json``, ``GET Calls.json``, ``POST Calls/{sid}.json`` to hang up or
redirect), basic-auth checked, with Twilio's JSON shapes and error bodies and its account
calls-per-second limit (1 by default; beyond it 429 with error 20429). ``phone`` simulates what
happens to a placed call: it rings, then the number's behaviour (``numbers.NumberBehaviour``:
a person who answers and says hello, an answering machine with a greeting and a beep, busy,
no answer, failed), Twilio's answering-machine detection with its real timing, the status
callbacks (signed with the auth token like Twilio's), the voice webhook (with ``AnsweredBy``)
and then what the TwiML says: ``<Connect><Stream>`` runs the simulated caller of
``sim.caller`` on the media stream, ``<Say>`` is "spoken" for as long as the words take,
``<Hangup/>`` ends the call. Point a server at it with ``TWILIO_API_BASE_URL``.

May import the standard library, aiohttp, the twilio package's request validator and
``sim.caller``; never ``bot``, ``pipelines`` or another ``sim`` package.
"""

from sim.twilio_api.numbers import FakeTwilioConfig, NumberBehaviour
from sim.twilio_api.server import FakeTwilioApi, running_twilio_api

__all__ = ["FakeTwilioApi", "FakeTwilioConfig", "NumberBehaviour", "running_twilio_api"]
