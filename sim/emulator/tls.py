"""TLS for the emulator: a private CA made at start, trusted by clients for this emulator only.

The SDK always connects with ``wss://``; clients pass ``client_ssl_context()`` (or the CA file)
instead of turning certificate checks off.
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
from pathlib import Path

import trustme


class TlsMaterial:
    """A throwaway CA and a server certificate for 127.0.0.1, localhost and ::1.

    Attributes:
        ca_file: The CA certificate (PEM) in a temporary directory removed by ``cleanup()``.
    """

    def __init__(self) -> None:
        self._ca = trustme.CA(organization_name="voicebot Live API emulator")
        self._cert = self._ca.issue_cert("127.0.0.1", "localhost", "::1")
        self._dir = Path(tempfile.mkdtemp(prefix="live-emulator-"))
        self.ca_file = self._dir / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_file))

    def server_context(self) -> ssl.SSLContext:
        """The server side: presents the emulator's certificate."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._cert.configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this emulator's CA (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def cleanup(self) -> None:
        """Remove the CA file and its directory."""
        shutil.rmtree(self._dir, ignore_errors=True)
