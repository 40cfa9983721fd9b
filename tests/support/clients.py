"""The product's own client, `auditline.client.Client`, logged in as the tests need."""

from __future__ import annotations

from collections.abc import Mapping

from auditline.audit.v1 import audit_log_pb2
from auditline.client import Client
from tests.support.processes import wait_for


def login(target: str, access_key: str, secret_key: str, *, renew: bool = True) -> Client:
    """A `Client` that has authenticated already: its login's events come first.

    With `renew=False` the client holds that one token and never authenticates again
    (a `Client` with keys does when a call is answered UNAUTHENTICATED): for tests
    that watch a token stop working, or that count every call the server sees.
    """
    client = Client(target, access_key=access_key, secret_key=secret_key)
    token = client.token
    if renew:
        return client
    client.close()
    return Client(target, token=token)


def login_as_admin(target: str, env: Mapping[str, str], *, renew: bool = True) -> Client:
    """Log in with the first admin's keys from a server's environment."""
    return login(
        target,
        env["AUDITLINE_ADMIN_ACCESS_KEY"],
        env["AUDITLINE_ADMIN_SECRET_KEY"],
        renew=renew,
    )


def wait_for_findings(client: Client, count: int = 1) -> None:
    """Wait until the node's detection engine has reported `count` findings."""
    request = audit_log_pb2.ListEventsRequest(
        filter=audit_log_pb2.EventFilter(event_names=["DetectionFinding"]), page_size=100
    )

    def enough() -> bool | None:
        return True if len(client.events.ListEvents(request).events) >= count else None

    wait_for(enough, timeout=30, what=f"{count} detection finding(s)")
