"""Where a call came from: the gRPC peer string, and x-forwarded-for from trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import unquote

__all__ = ["TrustedProxies", "parse_peer"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_peer(peer: str) -> tuple[str, int]:
    """`ipv4:1.2.3.4:5`, `ipv6:[::1]:5`, `unix:/path` → (address, port)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        host, _, port = rest.rpartition(":")
        return host, int(port) if port.isdigit() else 0
    if kind == "ipv6":
        host, _, port = rest.rpartition(":")
        return unquote(host).strip("[]"), int(port) if port.isdigit() else 0
    if kind in ("unix", "unix-abstract"):
        return f"unix:{rest}", 0
    return peer, 0


class TrustedProxies:
    """The networks whose `x-forwarded-for` header is believed."""

    def __init__(self, networks: Iterable[str | Network] = ()) -> None:
        self._networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) if isinstance(n, str) else n for n in networks
        )

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    def client_address(self, peer_address: str, forwarded_for: Sequence[str]) -> str:
        """The caller's address: walk x-forwarded-for right to left past trusted proxies.

        A header from an untrusted peer is ignored, so a client cannot pick its own
        address. Within the header, the rightmost untrusted entry is the client.
        """
        if not forwarded_for or not self.trusts(peer_address):
            return peer_address
        hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
        client = peer_address
        for hop in reversed([h for h in hops if h]):
            try:
                hop = str(ipaddress.ip_address(hop.strip("[]")))
            except ValueError:
                break  # garbage in the chain: stop at the last address we could trust
            client = hop
            if not self.trusts(hop):
                break
        return client

    def caller(self, peer: str, metadata: Iterable[tuple[str, Any]]) -> tuple[str, int]:
        """The caller's address and port, from gRPC's peer string and the call's
        metadata: the client behind trusted proxies (port 0, as the header has none).

        The audit events and a service's own decisions (blocking an address after
        failed logins, say) must agree on who called: both use this.
        """
        address, port = parse_peer(peer)
        if self._networks:
            forwarded = [v for k, v in metadata if k == "x-forwarded-for" and isinstance(v, str)]
            client = self.client_address(address, forwarded)
            if client != address:
                return client, 0
        return address, port
