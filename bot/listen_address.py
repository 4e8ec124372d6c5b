"""Listen addresses: parse ``HOST:PORT`` / ``PORT`` / ``off``, and tell loopback from the world.

Pure functions with no server imports, so ``bot.settings`` can validate ``VOICEBOT_OPS_PORT``
with them and ``bot.server`` / ``bot.serve_cmd`` can judge whether a bind address makes the
server reachable from outside (production mode, ``bot.ops``).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from bot.settings import Settings

DEFAULT_OPS_HOST = "127.0.0.1"
DEFAULT_OPS_LISTEN = "127.0.0.1:9464"  # 9464: the port Prometheus exporters conventionally use
OFF = "off"


class ListenAddress(NamedTuple):
    """Where a listener binds (``port`` 0: an ephemeral port, for tests)."""

    host: str
    port: int

    def url(self) -> str:
        """``http://host:port`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def parse_listen(value: str, default_host: str = DEFAULT_OPS_HOST) -> ListenAddress | None:
    """Parse ``HOST:PORT``, ``[V6]:PORT``, ``PORT`` (on ``default_host``) or ``off`` (None).

    Raises:
        ValueError: naming what was found and the accepted forms.
    """
    text = value.strip()
    if text.lower() == OFF:
        return None
    host, port_text = default_host, text
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or not text[close + 1 :].startswith(":"):
            raise ValueError(f"got {value!r}, expected [IPV6]:PORT, e.g. [::1]:9464")
        host, port_text = text[1:close], text[close + 2 :]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(
            f"got {value!r}, expected PORT (0-65535), HOST:PORT (e.g. 127.0.0.1:9464) or 'off'"
        )
    if not host:
        raise ValueError(f"got {value!r}: the host before ':' is empty; e.g. 0.0.0.0:9464")
    return ListenAddress(host, int(port_text))


def is_loopback_host(host: str) -> bool:
    """Whether binding ``host`` keeps a listener on this machine only.

    ``localhost`` and loopback IPs are; wildcard addresses (``0.0.0.0``, ``::``, empty),
    other IPs and any other host name are not (a name may resolve to anything).
    """
    name = host.strip().strip("[]").split("%")[0]
    if name.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def reachable_from_outside(settings: Settings, host: str) -> str | None:
    """Why this server is reachable from outside (production mode), or None when it is not.

    A Twilio auth token means Twilio is meant to reach it; a non-loopback bind address means
    anyone on that network can.
    """
    if settings.signatures_required:
        return "TWILIO_AUTH_TOKEN is set"
    if not is_loopback_host(host):
        return f"--host {host} is not a loopback address"
    return None


class OpsExposureError(ValueError):
    """The operations listener would be reachable from outside without a token."""


def check_ops_exposure(settings: Settings) -> None:
    """Refuse an operations listener on a non-loopback address without ``VOICEBOT_OPS_TOKEN``.

    Raises:
        OpsExposureError: naming the address, both variables and the fixes.
    """
    address = settings.ops_address
    if address is None or settings.ops_token is not None or is_loopback_host(address.host):
        return
    raise OpsExposureError(
        f"the operations listener (/stats; --ops-port / VOICEBOT_OPS_PORT = "
        f"{settings.ops_listen}) binds {address.host}, which is not a loopback address, and "
        "VOICEBOT_OPS_TOKEN is not set: "
        "anyone who can reach that port could read it. Set VOICEBOT_OPS_TOKEN (clients then "
        "send 'Authorization: Bearer <token>'), or bind it to 127.0.0.1 (e.g. --ops-port 9464)"
    )
