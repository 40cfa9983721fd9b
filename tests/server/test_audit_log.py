"""AuditLogService: events kept on the node, listed with filters and pages, and tailed."""

from __future__ import annotations

import base64
import contextlib
import threading
import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from auditline.account.v1 import bucket_pb2, service_account_pb2
from auditline.audit.v1 import audit_log_pb2, event_pb2
from auditline.client import Client
from auditline.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError
from tests.conftest import ServeFactory
from tests.support.account_server import new_account
from tests.support.clients import login, login_as_admin
from tests.support.processes import wait_for

ADMIN = {
    "AUDITLINE_ADMIN_ACCESS_KEY": "AKEVENTS",
    "AUDITLINE_ADMIN_SECRET_KEY": "events-" + uuid.uuid4().hex,
}


def _all(api: Client, **fields: Any) -> list[event_pb2.ApiEvent]:
    events: list[event_pb2.ApiEvent] = []
    token = ""
    while True:
        response = api.events.ListEvents(
            audit_log_pb2.ListEventsRequest(page_size=3, page_token=token, **fields)
        )
        events += response.events
        token = response.next_page_token
        if not token:
            return events


def test_list_events_filters_and_pages(serve: ServeFactory) -> None:
    # Events are exported (and freed from the exporters' backlog) at once, but stay
    # queryable for the retention window.
    process = serve("--export-interval", "0.1", env=ADMIN)
    api = login_as_admin(process.target, ADMIN)
    for _ in range(4):
        with contextlib.suppress(NotFoundError):
            api.buckets.GetBucket(bucket_pb2.GetBucketRequest(name="buckets/missing"))
    api.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())
    # Events reach the node's store a moment after their calls end.
    wait_for(
        lambda: True if any(e.event_name == "ListBuckets" for e in _all(api)) else None,
        timeout=30,
        what="the events in the store",
        interval=0.1,
    )
    everything = _all(api)
    sequences = [e.sequence for e in everything]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == len(sequences)
    missing = _all(
        api, filter=audit_log_pb2.EventFilter(event_names=["GetBucket"], response_codes=[5])
    )
    assert len(missing) == 4
    assert all(e.response.response_status == "NOT_FOUND" for e in missing)
    iam = _all(api, filter=audit_log_pb2.EventFilter(log_types=[event_pb2.LOG_TYPE_IAM]))
    assert [e.event_name for e in iam] == ["LoginSuccess"]
    mine = _all(api, filter=audit_log_pb2.EventFilter(account_name="admin"))
    assert mine
    assert all(e.request.account_name == "admin" for e in mine)
    after = _all(api, since_event_id=missing[1].event_id)
    assert after[0].sequence == missing[1].sequence + 1
    until = _all(api, until_time=missing[0].request.request_time)
    assert all(e.sequence < missing[0].sequence for e in until)
    with pytest.raises(NotFoundError):
        api.events.ListEvents(audit_log_pb2.ListEventsRequest(since_event_id="no-such-event"))
    # Out of range, each a clear INVALID_ARGUMENT (they were UNKNOWN: an OverflowError,
    # found by a review helper); a bound past what the store counts in is its end.
    future = timestamp_pb2.Timestamp(seconds=253_402_300_799)  # 9999-12-31
    assert _all(api, since_time=future) == []
    assert len(_all(api, until_time=future)) >= len(everything)
    hostile: list[dict[str, Any]] = [
        {"page_token": "junk"},
        {"page_token": base64.urlsafe_b64encode(b'{"after": 1e999}').decode()},
        {"page_token": base64.urlsafe_b64encode(b'{"after": 1180591620717411303424}').decode()},
        {"page_token": base64.urlsafe_b64encode(b'{"after": -5}').decode()},
        {"since_time": timestamp_pb2.Timestamp(seconds=10**15)},
        {"until_time": timestamp_pb2.Timestamp(seconds=0, nanos=-1)},
    ]
    for fields in hostile:
        with pytest.raises(InvalidArgumentError) as refused:
            api.events.ListEvents(audit_log_pb2.ListEventsRequest(**fields))
        assert refused.value.field_violations[0][0] in fields, refused.value


def test_tail_streams_events_made_after_it_started(serve: ServeFactory) -> None:
    process = serve(env=ADMIN)
    api = login_as_admin(process.target, ADMIN)
    received: list[event_pb2.ApiEvent] = []
    arrived = threading.Event()
    tail = api.events.TailEvents(
        audit_log_pb2.TailEventsRequest(
            filter=audit_log_pb2.EventFilter(event_names=["ListServiceAccounts"])
        ),
        timeout=60,
    )

    def read() -> None:
        for response in tail:
            received.append(response.event)
            if len(received) == 2:
                arrived.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    for _ in range(2):
        api.accounts.ListServiceAccounts(service_account_pb2.ListServiceAccountsRequest())
    assert arrived.wait(30)
    tail.cancel()
    assert [e.event_name for e in received] == ["ListServiceAccounts"] * 2


def test_a_tail_ends_when_its_callers_session_does(serve: ServeFactory) -> None:
    """The session is checked again as the stream goes on (at most a second apart):
    an auditor disabled and deleted while tailing gets no more events (it went on
    getting every later one, bodies and all, while its token opened nothing else)."""
    process = serve(env=ADMIN)
    admin = login_as_admin(process.target, ADMIN)
    account, secret = new_account(admin, service_account_pb2.ROLE_AUDITOR)
    auditor = login(process.target, account.access_key, secret, renew=False)
    tail = auditor.events.TailEvents(audit_log_pb2.TailEventsRequest(), timeout=60)
    ended: list[grpc.StatusCode] = []
    first = threading.Event()

    def read() -> None:
        try:
            for _ in tail:
                first.set()
        except grpc.RpcError as error:
            ended.append(error.code())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    admin.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())
    assert first.wait(30)
    admin.accounts.DisableServiceAccount(
        service_account_pb2.DisableServiceAccountRequest(name=account.name)
    )

    def stopped() -> bool | None:
        admin.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())  # more events to send
        return True if ended else None

    wait_for(stopped, timeout=30, what="the tail to end")
    assert ended == [grpc.StatusCode.UNAUTHENTICATED]


def _tail_code(api: Client, request: audit_log_pb2.TailEventsRequest, timeout: float) -> Any:
    try:
        for _ in api.events.TailEvents(request, timeout=timeout):
            pass
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_tails_are_few_and_a_quiet_one_ends_with_its_callers_session(
    serve: ServeFactory,
) -> None:
    """Each tail holds a server thread: a quarter of them at most (16 tails of an
    auditor, matching nothing, took every thread: no login, call or health check was
    answered, not even the admin's deletion of that auditor; found by a review helper).
    A tail that sends nothing is checked again too (it outlived its deleted caller)."""
    process = serve("--max-workers", "4", env=ADMIN)  # one tail at most
    admin = login_as_admin(process.target, ADMIN)
    account, secret = new_account(admin, service_account_pb2.ROLE_AUDITOR)
    auditor = login(process.target, account.access_key, secret, renew=False)
    only = audit_log_pb2.EventFilter(event_names=["ListBuckets"])
    for _ in range(2):
        admin.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())

    def both_kept() -> list[event_pb2.ApiEvent] | None:
        found = _all(admin, filter=only)
        return found if len(found) == 2 else None

    listed = wait_for(both_kept, timeout=30, what="the two events kept")
    # A tail that sends the second event, then nothing (no more ListBuckets calls).
    quiet = auditor.events.TailEvents(
        audit_log_pb2.TailEventsRequest(filter=only, since_event_id=listed[0].event_id),
        timeout=60,
    )
    assert next(quiet).event.event_id == listed[1].event_id
    ended: list[Any] = []

    def read() -> None:
        try:
            for _ in quiet:
                pass
        except grpc.RpcError as error:
            ended.append(error.code())

    reader = threading.Thread(target=read)
    reader.start()
    other = audit_log_pb2.TailEventsRequest()
    assert _tail_code(auditor, other, 10) == grpc.StatusCode.RESOURCE_EXHAUSTED
    admin.accounts.ListServiceAccounts(service_account_pb2.ListServiceAccountsRequest(), timeout=5)
    admin.accounts.DeleteServiceAccount(
        service_account_pb2.DeleteServiceAccountRequest(name=account.name), timeout=5
    )
    reader.join(30)
    assert ended == [grpc.StatusCode.UNAUTHENTICATED]
    # Its slot is given back (once the server has seen the call end).
    wait_for(
        lambda: _tail_code(admin, other, 2) == grpc.StatusCode.DEADLINE_EXCEEDED or None,
        timeout=30,
        what="the tail's slot given back",
    )


def test_standard_accounts_cannot_read_events(serve: ServeFactory) -> None:
    process = serve(env=ADMIN)
    api = login_as_admin(process.target, ADMIN)
    created = api.accounts.CreateServiceAccount(
        service_account_pb2.CreateServiceAccountRequest(
            service_account=service_account_pb2.ServiceAccount(display_name="plain")
        )
    )
    user = login(process.target, created.service_account.access_key, created.secret_key)
    with pytest.raises(PermissionDeniedError):
        user.events.ListEvents(audit_log_pb2.ListEventsRequest())
