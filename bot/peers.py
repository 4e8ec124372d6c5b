"""Peer URLs: which process keeps a call, and whether this one may dial it.

Several ``voicebot serve`` processes (pods, or workers of one machine) can stand behind one
``PUBLIC_URL`` and an ordinary round-robin load balancer. The process that answers a call's
webhook admits the call (its reservation, the single-use ledger entry of its ``call_token``)
and signs its own *peer URL* into the token (``VOICEBOT_PEER_URL``, e.g.
``http://10.0.0.5:8080``, the pod IP from the downward API). A process that receives the
stream while the token names another peer relays it there (``bot.stream_forward``).

This module holds the pure parts: parsing and comparing peer URLs, the optional allow-list
(``VOICEBOT_PEER_NETWORKS``) and :class:`PeerRouter`, which decides per stream: serve here,
relay to a peer, or refuse. Security rule: the only URLs ever dialled are peer URLs inside a
token signed with this deployment's key (no SSRF from a caller's text), and, when an
allow-list is set, only IP literals inside it. Without ``TWILIO_AUTH_TOKEN`` (loopback
development) every process signs with its own random key and cannot verify another's token;
then the peer named by an unverified token is dialled only when it is a loopback address, which
the client (itself on loopback: nothing else is served then) could reach anyway.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from bot.listen_address import ListenAddress, is_loopback_host

MEDIA_PATH = "/twilio/media"
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalize_peer_url(value: str) -> str:
    """``http(s)://host[:port]`` with a lower-case scheme and host, for signing and comparing.

    Raises:
        ValueError: naming the value and the expected form.
    """
    text = value.strip()
    expected = "expected http://HOST:PORT of this process as its peers reach it, e.g. "
    example = "http://10.0.0.5:8080"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"got {value!r} ({e}), {expected}{example}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"got {value!r}, {expected}{example}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(f"got {value!r}: no user, query or fragment; {expected}{example}")
    if parts.path not in ("", "/"):
        raise ValueError(
            f"got {value!r}: no path (streams go to {MEDIA_PATH} on it); {expected}{example}"
        )
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port is not None else "")


def parse_peer_networks(value: str) -> tuple[IPNetwork, ...]:
    """Comma- or space-separated CIDRs (``10.0.0.0/8, fd00::/8``); empty: no allow-list.

    Raises:
        ValueError: naming the entry that is no network and the expected form.
    """
    networks: list[IPNetwork] = []
    for item in value.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"{item!r} is not an IP network; expected CIDRs separated by commas, "
                "e.g. 10.0.0.0/8,fd00::/8"
            ) from None
    return tuple(networks)


def media_url(peer_url: str) -> str:
    """The media-stream WebSocket URL on a peer: ``ws(s)://host:port/twilio/media``."""
    parts = urlsplit(peer_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{MEDIA_PATH}"


def default_peer_url(host: str, port: int) -> str | None:
    """This process's own listen address when it is loopback (one machine), else None.

    Beyond loopback the address peers reach is the operator's to say (a wildcard bind such as
    ``0.0.0.0`` names no address), so ``VOICEBOT_PEER_URL`` must be set for routing there.
    """
    if not is_loopback_host(host):
        return None
    return normalize_peer_url(ListenAddress(host.strip("[]"), port).url())


def _host_ip(peer_url: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    host = urlsplit(peer_url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class Relay:
    """Relay the stream to the process at ``peer_url``."""

    peer_url: str


@dataclass(frozen=True)
class Refuse:
    """Close the stream: ``reason`` is the close reason, ``cause`` the counter's label."""

    reason: str
    cause: str


class PeerRouter:
    """Decides where a stream is served, from the peer its ``call_token`` names.

    Args:
        self_url: This process's peer URL ("" when it has none: it then relays every stream
            whose token names a peer, and serves the others).
        networks: The allow-list (``VOICEBOT_PEER_NETWORKS``); empty: any signed peer.
    """

    def __init__(self, self_url: str = "", networks: tuple[IPNetwork, ...] = ()) -> None:
        self.self_url = normalize_peer_url(self_url) if self_url else ""
        self.networks = networks

    def is_self(self, peer_url: str) -> bool:
        """Whether ``peer_url`` names this process."""
        try:
            return bool(self.self_url) and normalize_peer_url(peer_url) == self.self_url
        except ValueError:
            return False

    def decide(self, peer_url: str, *, verified: bool, relayed: bool) -> Relay | Refuse | None:
        """Serve here (None), relay, or refuse a stream whose token names ``peer_url``.

        Args:
            peer_url: The peer in the stream's token ("" when none or no token).
            verified: The token's signature was checked with this deployment's key.
            relayed: The stream already came through a relay (it is never relayed twice).
        """
        if not peer_url or self.is_self(peer_url):
            return None
        if not verified and not relayed:
            # Loopback development only (the caller checks that no auth token is set): the
            # owner verifies the token; dial it only where the client could go itself.
            ip = _host_ip(peer_url)
            if ip is None or not ip.is_loopback:
                return None  # served here, where the token is refused as invalid
        if relayed:
            return Refuse("call owner mismatch: relayed stream names another peer", "loop")
        try:
            peer = normalize_peer_url(peer_url)
        except ValueError:
            return Refuse("call token names an invalid peer URL", "bad_peer")
        if self.networks:
            ip = _host_ip(peer)
            if ip is None or not any(ip in net for net in self.networks):
                return Refuse("call owner outside VOICEBOT_PEER_NETWORKS", "not_allowed")
        return Relay(peer)
