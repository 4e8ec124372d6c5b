"""The process's shared ``genai.Client`` objects (one per Live API version).

Pipecat's Gemini Live service builds a client per call: three SSL contexts, ~60 ms of blocked
event loop each time. ``GeminiClients`` builds each once, on first use.

Each Live session is one TLS connection, and asyncio gives every TLS connection a 256 KiB
receive buffer that it fills with zeros up front (``SSLProtocol.max_size``): 256 KiB of resident
memory per call for messages of a few KiB. ``GeminiClients`` lowers it to
``TLS_READ_BUFFER_BYTES`` for the process (a larger read then takes a few more callbacks).
"""

from __future__ import annotations

import asyncio.sslproto
import ssl
from pathlib import Path

from google import genai
from google.genai.types import HttpOptions
from pipecat.services.google.utils import update_google_client_http_options

# Receive buffer of each asyncio TLS connection (asyncio's default is 256 KiB); four TLS records.
TLS_READ_BUFFER_BYTES = 64 * 1024


class GeminiClients:
    """One ``genai.Client`` per API version for the whole process.

    Args:
        api_key: Gemini API key (any non-empty string for the emulator).
        base_url: Live API base URL; ``None`` for Google's.
        ca_file: PEM of a private CA (the emulator's) trusted for ``base_url`` only.
    """

    def __init__(self, api_key: str, base_url: str | None = None, ca_file: Path | None = None):
        self._api_key = api_key
        self._base_url = base_url
        self._ssl = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
        self._clients: dict[str, genai.Client] = {}
        asyncio.sslproto.SSLProtocol.max_size = min(
            asyncio.sslproto.SSLProtocol.max_size, TLS_READ_BUFFER_BYTES
        )

    def get(self, api_version: str) -> genai.Client:
        """The shared client for ``api_version``, built on first use."""
        client = self._clients.get(api_version)
        if client is None:
            options = HttpOptions(api_version=api_version)
            if self._base_url:
                options.base_url = self._base_url
            if self._ssl is not None:
                # The private CA for every transport: the SDK's httpx clients ("verify") would
                # otherwise each load the default CA bundle, ~30 ms of CPU, for a URL they
                # cannot reach anyway (aiohttp and websockets take "ssl").
                options.client_args = {"verify": self._ssl}
                options.async_client_args = {"ssl": self._ssl, "verify": self._ssl}
            options = update_google_client_http_options(options)
            client = genai.Client(api_key=self._api_key, http_options=options)
            self._clients[api_version] = client
        return client
