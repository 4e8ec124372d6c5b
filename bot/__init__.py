"""The aiohttp server: Twilio webhooks, the media WebSocket, calls, settings and the CLI."""
