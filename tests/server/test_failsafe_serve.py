"""`auditline serve` with its audit spool on a real full disk (a tmpfs, as root).

The promises checked, with every kind of call a client or an attacker makes:
- fail-closed (`--audit-durability sync`): nothing ran without its event (no bucket
  or account exists that the log does not show); every answer is in the log with
  the code the client saw, or it is UNAVAILABLE (and then counted); logins never
  answer UNKNOWN, and no token goes out without its events;
- async: events wait in memory, the rest are counted exactly in a DATA_LOSS
  marker; health says the audit path is degraded, then recovered;
- both recover without a restart once the disk has room again.
"""

from __future__ import annotations

import collections
import itertools
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auditline.account.v1 import auth_pb2, bucket_pb2
from auditline.account.v1 import service_account_pb2 as sa_pb
from auditline.client import Client
from tests.conftest import ServeFactory
from tests.support.clients import login
from tests.support.exported import exported_events
from tests.support.processes import wait_for
from tests.support.serve import ServeProcess
from tests.support.volume import SmallVolume, small_volume

ADMIN_KEY = "AKFAILSAFE"
ADMIN_SECRET = "failsafe-secret-" + uuid.uuid4().hex
ENV = {"AUDITLINE_ADMIN_ACCESS_KEY": ADMIN_KEY, "AUDITLINE_ADMIN_SECRET_KEY": ADMIN_SECRET}
AUDIT_HEALTH = "auditline.audit.pipeline"
# Every call recorded one by one (health checks and unauthenticated floods too): these
# tests count events exactly.
NO_SUMMARIES = (
    "--audit-unauthenticated-rate",
    "1e9",
    "--audit-unauthenticated-burst",
    "1000000000",
    "--audit-policy",
    "*=all",
)


class Traffic:
    """Calls of every kind, each client-side outcome kept as (method, code).

    Every client holds one token and never logs in again by itself: each Authenticate
    the server sees is one made here, and counted.
    """

    def __init__(self, target: str) -> None:
        self.admin = login(target, ADMIN_KEY, ADMIN_SECRET, renew=False)
        self.forged = Client(target, token="forged-token")
        self.outcomes: list[tuple[str, str]] = [("Authenticate", "OK")]
        self.created_buckets: list[str] = []
        self.tokens = 0
        self._lock = threading.Lock()
        self._picks = itertools.count()
        account = self.admin.accounts.CreateServiceAccount(
            sa_pb.CreateServiceAccountRequest(
                service_account=sa_pb.ServiceAccount(
                    display_name="standard", role=sa_pb.ROLE_STANDARD
                )
            ),
            timeout=30,
        )
        self.outcomes.append(("CreateServiceAccount", "OK"))
        self.user_key, self.user_secret = account.service_account.access_key, account.secret_key
        self.user = login(target, self.user_key, self.user_secret, renew=False)
        self.outcomes.append(("Authenticate", "OK"))
        # Logins and token checks need no token: the open methods, on any client.
        self.auth = self.forged.auth

    def _call(self, method: str, call: Callable[[], Any]) -> Any:
        try:
            result = call()
            code = "OK"
        except grpc.RpcError as error:
            result, code = None, error.code().name
        with self._lock:
            self.outcomes.append((method, code))
        return result

    def one(self) -> None:
        pick = next(self._picks) % 11
        admin, name = self.admin, f"b-{uuid.uuid4().hex[:12]}"
        if pick == 0:
            if self._call(
                "CreateBucket",
                lambda: admin.buckets.CreateBucket(
                    bucket_pb2.CreateBucketRequest(bucket_id=name), timeout=30
                ),
            ):
                self.created_buckets.append(name)
        elif pick == 1:
            self._call(
                "CreateServiceAccount",
                lambda: admin.accounts.CreateServiceAccount(
                    sa_pb.CreateServiceAccountRequest(
                        service_account=sa_pb.ServiceAccount(
                            display_name=name, role=sa_pb.ROLE_ADMIN
                        )
                    ),
                    timeout=30,
                ),
            )
        elif pick == 2 and self.created_buckets:
            victim = self.created_buckets.pop()
            self._call(
                "DeleteBucket",
                lambda: admin.buckets.DeleteBucket(
                    bucket_pb2.DeleteBucketRequest(name=f"buckets/{victim}"), timeout=30
                ),
            )
        elif pick == 3:
            self._call(
                "Authenticate",
                lambda: self.auth.Authenticate(
                    auth_pb2.AuthenticateRequest(access_key=self.user_key, secret_key="wrong"),
                    timeout=30,
                ),
            )
        elif pick == 4:
            self._call(
                "Authenticate",
                lambda: self.auth.Authenticate(
                    auth_pb2.AuthenticateRequest(access_key="AKNOBODY", secret_key="x"),
                    timeout=30,
                ),
            )
        elif pick == 5:
            self._call(
                "ListBuckets",
                lambda: self.forged.buckets.ListBuckets(
                    bucket_pb2.ListBucketsRequest(), timeout=30
                ),
            )
        elif pick == 6:
            self._call(
                "CreateBucket",
                lambda: self.user.buckets.CreateBucket(
                    bucket_pb2.CreateBucketRequest(bucket_id=name), timeout=30
                ),
            )
        elif pick == 7:
            self._call(
                "GetBucket",
                lambda: admin.buckets.GetBucket(
                    bucket_pb2.GetBucketRequest(name=f"buckets/{name}"), timeout=30
                ),
            )
        elif pick == 10:
            token = self.user.token if next(self._picks) % 2 else "forged-token"
            self._call(
                "ValidateToken",
                lambda: self.auth.ValidateToken(
                    auth_pb2.ValidateTokenRequest(token=token), timeout=30
                ),
            )
        elif pick == 8:
            unknown: Any = admin.channel.unary_unary("/auditline.account.v1.BucketService/Nothing")
            self._call("Nothing", lambda: unknown(b"", timeout=30))
        else:
            response = self._call(
                "Authenticate",
                lambda: self.auth.Authenticate(
                    auth_pb2.AuthenticateRequest(
                        access_key=self.user_key, secret_key=self.user_secret
                    ),
                    timeout=30,
                ),
            )
            if response is not None:
                with self._lock:
                    self.tokens += 1

    def run(self, until: Callable[[], bool], threads: int = 4) -> None:
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                self.one()

        workers = [threading.Thread(target=loop) for _ in range(threads)]
        for worker in workers:
            worker.start()
        try:
            wait_for(lambda: True if until() else None, timeout=120, what="the traffic's goal")
        finally:
            stop.set()
            for worker in workers:
                worker.join(60)


def _health(target: str, service: str) -> str:
    """The health status of `service`; UNAVAILABLE when the check itself is refused (a
    fail-closed server that cannot audit refuses every call, health checks too)."""
    with grpc.insecure_channel(target) as channel:
        try:
            stub: Any = health_pb2_grpc.HealthStub(channel)  # its stubs omit the methods
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        except grpc.RpcError as error:
            return str(error.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def _start(serve: ServeFactory, data_dir: Path, *args: str) -> ServeProcess:
    return serve(
        "--export-interval",
        "3600",
        "--usage-snapshot-interval",
        "0",
        "--spool-reserve-bytes",
        str(1 << 20),
        *NO_SUMMARIES,
        *args,
        env=ENV,
        data_dir=data_dir,
    )


def _api_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["LogType"] == "LOG_TYPE_ACCOUNT_API"]


def _dropped(events: list[dict[str, Any]]) -> int:
    return sum(
        e["Request"]["RequestParams"]["dropped_events"]
        for e in events
        if e["EventName"] == "AuditEventsDropped"
    )


def _fill_when_started(volume: SmallVolume) -> None:
    volume.fill()
    assert volume.available() < 64 << 10


def test_fail_closed_server_on_a_full_disk(
    tmp_path: Path, serve: ServeFactory, audit_process: str
) -> None:
    data_dir = tmp_path / "data"
    with small_volume(data_dir / "audit", 24 << 20) as volume:
        process = _start(
            serve, data_dir, "--audit-durability", "sync", "--audit-process", audit_process
        )
        traffic = Traffic(process.target)
        _fill_when_started(volume)
        traffic.run(until=lambda: sum(c == "UNAVAILABLE" for _, c in traffic.outcomes) >= 100)
        assert _health(process.target, "") == "UNAVAILABLE"
        traffic.outcomes.append(("Check", "UNAVAILABLE"))
        volume.free()
        checks = 0

        def recovered() -> bool | None:
            nonlocal checks
            checks += 1
            status = _health(process.target, AUDIT_HEALTH)
            traffic.outcomes.append(("Check", "OK" if status == "SERVING" else status))
            return True if status == "SERVING" else None

        wait_for(recovered, timeout=30, what="the audit path to recover")
        traffic.run(until=lambda: traffic.outcomes[-1][1] != "UNAVAILABLE")  # serving again
        buckets = traffic.admin.buckets.ListBuckets(
            bucket_pb2.ListBucketsRequest(page_size=1000), timeout=30
        ).buckets
        accounts = traffic.admin.accounts.ListServiceAccounts(
            sa_pb.ListServiceAccountsRequest(page_size=1000), timeout=30
        ).service_accounts
        assert process.terminate() == 0
    events = exported_events(data_dir)
    api = _api_events(events)
    logged = collections.Counter((e["Method"], e["Response"]["ResponseStatus"]) for e in api)
    seen = collections.Counter(traffic.outcomes)
    # The two listings above, and the graceful stop's nothing else.
    seen.update([("ListBuckets", "OK"), ("ListServiceAccounts", "OK")])
    answered = {k: n for k, n in seen.items() if k[1] != "UNAVAILABLE"}
    assert {k: n for k, n in logged.items() if k[1] != "UNAVAILABLE"} == answered
    assert "UNKNOWN" not in {code for _, code in seen}
    # Refusals are in the log too, or counted in a marker, exactly.
    refused = sum(n for k, n in seen.items() if k[1] == "UNAVAILABLE")
    assert refused >= 100
    assert sum(n for k, n in logged.items() if k[1] == "UNAVAILABLE") + _dropped(events) == refused
    # Nothing exists that the log does not show.
    created = {
        e["Request"]["RequestParams"]["bucket_id"]
        for e in api
        if e["Method"] == "CreateBucket" and e["Response"]["ResponseStatus"] == "OK"
    }
    deleted = {
        e["Request"]["RequestParams"]["name"].removeprefix("buckets/")
        for e in api
        if e["Method"] == "DeleteBucket" and e["Response"]["ResponseStatus"] == "OK"
    }
    assert {b.name.removeprefix("buckets/") for b in buckets} - {"auditline-audit-logs"} == (
        created - deleted
    )
    made_accounts = {
        e["Request"]["RequestParams"]["service_account"]["display_name"]
        for e in api
        if e["Method"] == "CreateServiceAccount" and e["Response"]["ResponseStatus"] == "OK"
    }
    assert {a.display_name for a in accounts} - {"admin"} == made_accounts
    # No token went out without its IAM event.
    logins = [e for e in events if e["EventName"] == "LoginSuccess"]
    assert len(logins) >= traffic.tokens + 2


def test_async_server_on_a_full_disk_counts_every_loss(
    tmp_path: Path, serve: ServeFactory, audit_process: str
) -> None:
    data_dir = tmp_path / "data"
    with small_volume(data_dir / "audit", 24 << 20) as volume:
        process = _start(
            serve,
            data_dir,
            "--spool-memory-bytes",
            str(1 << 16),
            "--audit-process",
            audit_process,
            # No findings: one made of a drop marker while the disk was full is
            # dropped and counted with the calls' events (it over-counted by 7 under
            # a loaded machine), and no call made it.
            "--detection-interval",
            "0",
        )
        admin = login(process.target, ADMIN_KEY, ADMIN_SECRET, renew=False)
        calls = 2  # the login: its call and its IAM event
        _fill_when_started(volume)

        def health() -> str:
            nonlocal calls
            calls += 1
            return _health(process.target, AUDIT_HEALTH)

        def dropping() -> bool | None:
            nonlocal calls
            for _ in range(50):
                admin.buckets.ListBuckets(bucket_pb2.ListBucketsRequest(page_size=1), timeout=30)
                calls += 1
            return True if health() == "NOT_SERVING" else None

        wait_for(dropping, timeout=120, what="the audit path to turn degraded", interval=0)
        for _ in range(2000):  # past the reserve and the memory bound: events are dropped
            admin.buckets.ListBuckets(bucket_pb2.ListBucketsRequest(page_size=1), timeout=30)
            calls += 1
        assert health() == "NOT_SERVING"
        calls += 1
        assert _health(process.target, "") == "SERVING"  # async mode keeps serving
        volume.free()
        wait_for(
            lambda: True if health() == "SERVING" else None,
            timeout=30,
            what="the audit path to recover",
        )
        assert process.terminate() == 0
    events = exported_events(data_dir)
    # The calls' events: not the drop marker, nor the policy each start records, nor the
    # findings of the detection rules (the drops are one).
    recorded = [
        e
        for e in events
        if e["EventName"] not in ("AuditEventsDropped", "AuditPolicyApplied")
        and e["LogType"] != "LOG_TYPE_FINDINGS"
    ]
    dropped = _dropped(events)
    assert dropped > 0
    # Every call's event is in the log, or counted by a marker: exactly. (What the
    # assertion holds says whether an event was written twice or a marker
    # over-counted.)
    twice = [k for k, n in collections.Counter(e["EventId"] for e in recorded).items() if n > 1]
    assert len(recorded) + dropped == calls, (
        twice[:5],
        [m["Request"]["RequestParams"] for m in events if m["EventName"] == "AuditEventsDropped"],
    )
    seqs = [int(e["Sequence"]) for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
