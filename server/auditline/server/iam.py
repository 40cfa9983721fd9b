"""The IAM audit log's events: what the service records about logins and sessions,
and the codes of the account audit log document's IAM table."""

from __future__ import annotations

import dataclasses
import time
import uuid

import grpc

from auditline.audit.v1 import event_pb2, options_pb2

__all__ = ["IAM_CODES", "IAM_EVENTS", "IamEvent", "IamEventKind", "iam_api_event"]

# Every IAM event code the service produces, with the description the account audit
# log document gives it (its IAM table). One place: the catalog lists these.
IAM_CODES: dict[str, str] = {
    "s": "Successful sign-on event.",
    "f": "Failed login.",
    "fp": "Failed login (incorrect password).",
    "fu": "Failed login (invalid email/username).",
    "limit_wc": (
        "An IP address is blocked with 10 failed login attempts into a single account "
        "from the same IP address."
    ),
    "limit_mu": (
        "An IP address is blocked with 100 failed login attempts using different "
        "usernames, all with incorrect passwords in 24 hours."
    ),
    "slo": "User successfully signed out.",
    "flo": "User logout failed.",
    "tv": "A session token was checked (ValidateToken); not in the document's table.",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class IamEventKind:
    """An IAM event the service writes: the codes it carries, the method that writes it."""

    codes: tuple[str, ...]
    method: str  # of AuthService


# Every IAM event, by name. `IamEvent` refuses any other name or code, so this table
# (and the catalog made from it) cannot fall behind the code.
IAM_EVENTS: dict[str, IamEventKind] = {
    "LoginSuccess": IamEventKind(codes=("s",), method="Authenticate"),
    "FailedLoginDisabledAccount": IamEventKind(codes=("f",), method="Authenticate"),
    "FailedLoginWrongSecret": IamEventKind(codes=("fp",), method="Authenticate"),
    "FailedLoginUnknownAccessKey": IamEventKind(codes=("fu",), method="Authenticate"),
    "BlockedLoginAttempt": IamEventKind(codes=("limit_wc", "limit_mu"), method="Authenticate"),
    "IpBlocked": IamEventKind(codes=("limit_wc", "limit_mu"), method="Authenticate"),
    "TokenValidated": IamEventKind(codes=("tv",), method="ValidateToken"),
    "LogoutSuccess": IamEventKind(codes=("slo",), method="Logout"),
    "LogoutFailed": IamEventKind(codes=("flo",), method="Logout"),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class IamEvent:
    """An identity event for the IAM audit log (codes as in the IAM log's table)."""

    code: str  # a key of IAM_CODES
    event_name: str
    description: str
    access_key: str
    account_name: str
    source_ip: str
    status: int  # the gRPC code the caller got
    method: str = "Authenticate"  # the AuthService method that produced it
    # May be counted with its call in a summary of unauthenticated calls past their
    # rate; a block of an address never is, nor a failed login (the detections read
    # each, and the blocks bound how many a source makes): recorded on their own.
    summarize: bool = True

    def __post_init__(self) -> None:
        kind = IAM_EVENTS.get(self.event_name)
        if kind is None or self.code not in kind.codes or self.method != kind.method:
            raise ValueError(
                f"IAM event {self.event_name}/{self.code} from {self.method} is not in IAM_EVENTS"
            )


def iam_api_event(event: IamEvent, node_id: str) -> event_pb2.ApiEvent:
    """The IAM-log `ApiEvent` of an identity event."""
    now = time.time_ns()
    code = grpc.StatusCode.OK
    for candidate in grpc.StatusCode:
        if candidate.value[0] == event.status:
            code = candidate
    api_event = event_pb2.ApiEvent(
        event_name=event.event_name,
        version="2",
        event_id=str(uuid.uuid4()),
        node_id=node_id,
        service="auditline.account.v1.AuthService",
        method=event.method,
        activity=options_pb2.ACTIVITY_OTHER,
        log_type=event_pb2.LOG_TYPE_IAM,
        iam_code=event.code,
        iam_description=IAM_CODES[event.code],
    )
    api_event.request.account_name = event.account_name
    api_event.request.access_key = event.access_key
    api_event.request.source_ip = event.source_ip
    api_event.request.request_time.FromNanoseconds(now)
    api_event.request.request_params.SetInParent()
    api_event.response.response_time.FromNanoseconds(now)
    api_event.response.response_code = event.status
    api_event.response.response_status = code.name
    api_event.response.response_error = "" if event.status == 0 else event.description
    api_event.response.response_body.SetInParent()
    return api_event
