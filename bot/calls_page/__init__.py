"""The calls page of the operations listener: live calls and past calls, read-only.

``routes.add_calls_page_routes`` serves a small page (``static/``: HTML, JS and CSS, no build
step, nothing from a CDN) at ``/`` and ``/calls``, and the JSON it polls: ``/api/calls/live``
(every second), ``/api/calls`` (past calls from the records database) and
``/api/calls/{call_sid}`` (one call's record and transcript). ``live.LiveView`` is what a live
call keeps for it. The ops listener's bearer-token rule applies (``bot.ops``); a browser opens
the page once with ``?token=…`` and gets a cookie.
"""
