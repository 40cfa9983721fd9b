"""Three replicas of `auditline serve` on one PostgreSQL and one SeaweedFS, started at
once: one admin and one audit bucket between them; a token, its revocation and login
failures count on every replica; a round-robin client's calls are each exported once,
under the node that served them; what one replica changes (an exporter, the audit
settings) applies on the others within the poll interval; creates of one name on
several replicas at once give one success."""

from __future__ import annotations

import functools
import itertools
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from auditline.account.v1 import auth_pb2, bucket_pb2
from auditline.account.v1 import service_account_pb2 as sa_pb
from auditline.audit.v1 import audit_log_pb2, exporter_pb2, settings_pb2
from auditline.client import Client
from tests.support.account_server import (
    ADMIN_KEY,
    ADMIN_SECRET,
    admin_env,
    new_account,
    new_bucket,
    new_name,
)
from tests.support.clients import login
from tests.support.outcome import code_of
from tests.support.postgres import PostgreSQL
from tests.support.processes import wait_for
from tests.support.seaweedfs import SeaweedFS
from tests.support.serve import ServeProcess

pytestmark = pytest.mark.seaweedfs

REPLICAS = 3
POLL = 0.3  # --state-poll-interval: the bound on following another replica's change


class Cluster:
    def __init__(self, replicas: list[ServeProcess]) -> None:
        self.replicas = replicas
        self.admins = [login(r.target, ADMIN_KEY, ADMIN_SECRET) for r in replicas]

    @property
    def round_robin(self) -> str:
        """One target naming every replica: the client goes round them."""
        return "ipv4:" + ",".join(r.target for r in self.replicas)

    def close(self) -> None:
        for client in self.admins:
            client.close()


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgreSQL, seaweedfs: SeaweedFS
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("replicas")
    database = postgres.new_database()
    env = admin_env() | seaweedfs.aws_env
    args = [
        "--database-url", database,
        *seaweedfs.shared_store_args,
        "--audit-bucket", f"replicas-{uuid.uuid4().hex[:8]}",
        "--audit-durability", "sync",
        "--export-interval", "0.5",
        "--state-poll-interval", str(POLL),
        "--usage-snapshot-interval", "0",
    ]  # fmt: skip
    replicas = [ServeProcess(root / f"node{i}", args=args, env=env) for i in range(REPLICAS)]
    # Started together: the first start's bootstrap (the admin, the audit bucket) races.
    failures: list[BaseException] = []

    def start(replica: ServeProcess) -> None:
        try:
            replica.start(timeout=60)
        except BaseException as error:  # reported below, with the others stopped
            failures.append(error)

    threads = [threading.Thread(target=start, args=(r,)) for r in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert not failures, failures
        cluster = Cluster(replicas)
        yield cluster
        cluster.close()
    finally:
        for replica in replicas:
            replica.stop()


def _node_ids(cluster: Cluster) -> set[str]:
    return {(Path(r.data_dir) / "node-id").read_text().strip() for r in cluster.replicas}


def test_replicas_started_together_share_one_admin_and_one_audit_bucket(
    cluster: Cluster,
) -> None:
    for admin in cluster.admins:
        accounts = admin.accounts.ListServiceAccounts(
            sa_pb.ListServiceAccountsRequest(page_size=1000)
        ).service_accounts
        assert [a.display_name for a in accounts].count("admin") == 1
    targets = {
        admin.settings.GetAuditSettings(
            settings_pb2.GetAuditSettingsRequest()
        ).settings.target_bucket
        for admin in cluster.admins
    }
    assert len(targets) == 1
    # The keys of the one admin are in the data directory of the replica that made it,
    # or nowhere when they came from the environment (as here).
    assert not any((r.data_dir / "admin-credentials").exists() for r in cluster.replicas)
    assert len(_node_ids(cluster)) == REPLICAS


def test_a_token_works_on_every_replica_and_its_revocation_too(cluster: Cluster) -> None:
    account, secret = new_account(cluster.admins[0], sa_pb.ROLE_ADMIN)
    token = login(cluster.replicas[0].target, account.access_key, secret).token
    holders = [Client(r.target, token=token) for r in cluster.replicas]
    for holder in holders:
        assert holder.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=token)).valid
        holder.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())
    # Disabled on one replica: its session ends on all of them at once.
    cluster.admins[1].accounts.DisableServiceAccount(
        sa_pb.DisableServiceAccountRequest(name=account.name)
    )
    for holder in holders:
        code = code_of(
            functools.partial(holder.buckets.ListBuckets, bucket_pb2.ListBucketsRequest())
        )
        assert code == grpc.StatusCode.UNAUTHENTICATED
        holder.close()


def test_login_failures_on_several_replicas_add_up_to_a_block(cluster: Cluster) -> None:
    account, secret = new_account(cluster.admins[0])
    wrong = auth_pb2.AuthenticateRequest(access_key=account.access_key, secret_key="wrong")
    for attempt in range(10):  # the per-account limit, spread over the replicas
        anonymous = Client(cluster.replicas[attempt % REPLICAS].target)
        assert code_of(functools.partial(anonymous.auth.Authenticate, wrong)) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        anonymous.close()
    right = auth_pb2.AuthenticateRequest(access_key=account.access_key, secret_key=secret)
    for replica in cluster.replicas:
        anonymous = Client(replica.target)
        code = code_of(functools.partial(anonymous.auth.Authenticate, right))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        anonymous.close()


def test_round_robin_calls_are_each_exported_once_under_their_node(cluster: Cluster) -> None:
    tag = "rr" + uuid.uuid4().hex[:8]
    calls = 30
    with Client(cluster.round_robin, access_key=ADMIN_KEY, secret_key=ADMIN_SECRET) as client:
        for i in range(calls):
            client.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=f"{tag}-{i}"))
    sql = (
        "SELECT Request.RequestParams->>'bucket_id' AS bucket, NodeId, node, file "  # noqa: S608
        f"FROM events WHERE EventName = 'CreateBucket' AND bucket LIKE '{tag}-%'"
    )

    def exported() -> list[tuple[str, str, str, str]] | None:
        response = cluster.admins[0].events.QueryEvents(
            audit_log_pb2.QueryEventsRequest(sql=sql, max_rows=1000), timeout=60
        )
        rows = [tuple(v.string_value for v in row.values) for row in response.rows]
        return rows if len(rows) >= calls else None  # type: ignore[return-value]

    rows = wait_for(exported, timeout=60, what="every replica's files")
    assert sorted(bucket for bucket, *_ in rows) == sorted(f"{tag}-{i}" for i in range(calls))
    served = Counter(node_id for _, node_id, _, _ in rows)
    assert set(served) == _node_ids(cluster)  # every replica served some
    for _, node_id, key_node, key in rows:
        assert key_node == node_id, key  # each under the keys of the node that served it


def test_an_exporter_and_the_audit_settings_reach_every_replica(cluster: Cluster) -> None:
    bucket = new_bucket(cluster.admins[0])
    definition = exporter_pb2.Exporter(
        display_name=new_name("replicated"),
        bucket=bucket,
        prefix="everyone/",
        format=exporter_pb2.OUTPUT_FORMAT_OCSF_JSON,
    )
    definition.flush_interval.FromMilliseconds(300)
    exporter = (
        cluster.admins[0]
        .exporters.CreateExporter(exporter_pb2.CreateExporterRequest(exporter=definition))
        .exporter
    )
    request = audit_log_pb2.QueryEventsRequest(
        sql="SELECT DISTINCT node FROM files", exporter=exporter.name
    )

    def every_node_exports() -> bool | None:
        for admin in cluster.admins:  # each replica keeps making events
            admin.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())
        rows = cluster.admins[0].events.QueryEvents(request).rows
        return True if {r.values[0].string_value for r in rows} == _node_ids(cluster) else None

    wait_for(every_node_exports, timeout=60, what="the new exporter's files from every node")

    # Any replica shows every node's status of it, as each node reported it.
    def reported() -> exporter_pb2.Exporter | None:
        got = (
            cluster.admins[2]
            .exporters.GetExporter(exporter_pb2.GetExporterRequest(name=exporter.name))
            .exporter
        )
        written = {n.node_id for n in got.node_statuses if n.status.last_object_key}
        return got if written == _node_ids(cluster) else None

    shown = wait_for(reported, timeout=30, what="every node's status of the exporter")
    for node in shown.node_statuses:
        assert node.status.state != exporter_pb2.EXPORTER_STATE_ERROR
        assert node.status.last_object_key.startswith("everyone/ocsf/")
        assert node.node_id in node.status.last_object_key
        assert node.status.watermark > 0
        assert node.report_time.seconds > 0
    # Account audit logs turned off on one replica: within the poll interval the
    # others keep no more account API events either.
    cluster.admins[0].settings.DisableAccountAuditLogs(
        settings_pb2.DisableAccountAuditLogsRequest()
    )
    try:
        for admin in cluster.admins[1:]:
            wait_for(
                functools.partial(_keeps_a_new_call, admin, bucket, expected=False),
                timeout=10 * POLL + 10,
                what="the replica to follow the setting",
            )
    finally:
        cluster.admins[0].settings.EnableAccountAuditLogs(
            settings_pb2.EnableAccountAuditLogsRequest()
        )
    for admin in cluster.admins[1:]:
        wait_for(
            functools.partial(_keeps_a_new_call, admin, bucket, expected=True),
            timeout=10 * POLL + 10,
            what="the replica to follow the setting back",
        )


def test_an_exporter_deleted_on_one_replica_stops_on_every_replica(
    cluster: Cluster, seaweedfs: SeaweedFS
) -> None:
    admin = cluster.admins[0]
    bucket = new_bucket(admin)
    definition = exporter_pb2.Exporter(display_name=new_name("doomed"), bucket=bucket)
    definition.flush_interval.FromMilliseconds(300)
    exporter = admin.exporters.CreateExporter(
        exporter_pb2.CreateExporterRequest(exporter=definition)
    ).exporter
    s3 = seaweedfs.client()

    def every_node_wrote() -> bool | None:
        for replica in cluster.admins:
            replica.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        return True if all(any(n in k for k in keys) for n in _node_ids(cluster)) else None

    wait_for(every_node_wrote, timeout=60, what="the exporter's files from every node")
    cluster.admins[1].exporters.DeleteExporter(
        exporter_pb2.DeleteExporterRequest(name=exporter.name)
    )
    exporter_id = exporter.name.rpartition("/")[2]
    stopped = f"exporter {exporter_id} stopped: its definition was deleted"
    for process in cluster.replicas:
        wait_for(
            functools.partial(_logged, process, stopped),
            timeout=10 * POLL + 10,
            what="every replica to stop the deleted exporter",
        )
    files = s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0)
    # New calls on every replica, exported by the default exporter: the deleted one
    # (flushing every 0.3 s when it ran) writes none of them.
    tag = "after" + uuid.uuid4().hex[:8]
    missing = bucket_pb2.GetBucketRequest(name=f"buckets/{tag}")
    for replica in cluster.admins:
        code_of(functools.partial(replica.buckets.GetBucket, missing))
    sql = (
        "SELECT count(*) FROM events WHERE "  # noqa: S608
        f"Request.RequestParams->>'name' = 'buckets/{tag}'"
    )

    def default_exported() -> bool | None:
        rows = admin.events.QueryEvents(audit_log_pb2.QueryEventsRequest(sql=sql)).rows
        return True if rows and rows[0].values[0].number_value == REPLICAS else None

    wait_for(default_exported, timeout=60, what="the default exporter's files of the calls")
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == files


def _logged(process: ServeProcess, line: str) -> bool | None:
    return True if line in process.log() else None


def _keeps_a_new_call(admin: Client, bucket: str, *, expected: bool) -> bool | None:
    """True when a GetBucket call on the replica is kept in its log or not, as
    `expected`; else None (for `wait_for`)."""
    listed = audit_log_pb2.ListEventsRequest(
        filter=audit_log_pb2.EventFilter(event_names=["GetBucket"]), page_size=1000
    )
    before = len(admin.events.ListEvents(listed).events)
    admin.buckets.GetBucket(bucket_pb2.GetBucketRequest(name=f"buckets/{bucket}"))
    kept = len(admin.events.ListEvents(listed).events) > before
    return True if kept == expected else None


def test_creates_of_one_name_on_several_replicas_give_one_success(cluster: Cluster) -> None:
    name = new_name("race")
    start = threading.Barrier(REPLICAS * 2)
    codes: list[grpc.StatusCode] = []

    def create(admin: Client) -> None:
        start.wait()
        codes.append(
            code_of(
                lambda: admin.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=name))
            )
        )

    threads = [threading.Thread(target=create, args=(a,)) for a in cluster.admins * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(codes) == Counter(
        {grpc.StatusCode.OK: 1, grpc.StatusCode.ALREADY_EXISTS: REPLICAS * 2 - 1}
    )


def test_a_replica_killed_under_load_loses_no_acknowledged_event(cluster: Cluster) -> None:
    """`kill -9` of one replica in sync mode while a round-robin client's calls run: the
    others keep serving, and after its restart every call that was answered OK, on
    any replica, is exported once."""
    tag = "kill" + uuid.uuid4().hex[:8]
    victim_index = 1
    victim = cluster.replicas[victim_index]
    acknowledged: list[str] = []
    after_kill: list[str] = []
    killed, stop = threading.Event(), threading.Event()

    def load(worker: int) -> None:
        with Client(cluster.round_robin, access_key=ADMIN_KEY, secret_key=ADMIN_SECRET) as client:
            for i in itertools.count():
                if stop.is_set():
                    return
                name = f"{tag}-{worker}-{i}"
                request = bucket_pb2.CreateBucketRequest(bucket_id=name)
                if code_of(functools.partial(client.buckets.CreateBucket, request, timeout=10)) == (
                    grpc.StatusCode.OK
                ):
                    acknowledged.append(name)
                    if killed.is_set():
                        after_kill.append(name)

    workers = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for worker in workers:
        worker.start()
    try:
        wait_for(lambda: len(acknowledged) >= 40 or None, timeout=60, what="load")
        victim.proc.kill()
        victim.proc.wait(timeout=10)
        killed.set()
        wait_for(lambda: len(after_kill) >= 40 or None, timeout=60, what="the others serving")
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    victim.start(timeout=60)
    cluster.admins[victim_index].close()
    cluster.admins[victim_index] = login(victim.target, ADMIN_KEY, ADMIN_SECRET)
    sql = (
        "SELECT Request.RequestParams->>'bucket_id' AS bucket, count(*) AS copies, "  # noqa: S608
        "any_value(NodeId) AS node "
        f"FROM events WHERE EventName = 'CreateBucket' AND bucket LIKE '{tag}-%' "
        "GROUP BY bucket"
    )
    wanted = set(acknowledged)

    def exported() -> dict[str, tuple[float, str]] | None:
        rows = (
            cluster.admins[0]
            .events.QueryEvents(
                audit_log_pb2.QueryEventsRequest(sql=sql, max_rows=1000), timeout=60
            )
            .rows
        )
        found = {
            row.values[0].string_value: (row.values[1].number_value, row.values[2].string_value)
            for row in rows
        }
        return found if wanted <= set(found) else None

    found = wait_for(exported, timeout=90, what="every acknowledged call's event")
    assert all(copies == 1 for copies, _ in found.values()), found
    # The killed replica had served some of them: its spool was exported after the restart.
    victim_id = (victim.data_dir / "node-id").read_text().strip()
    assert any(found[name][1] == victim_id for name in wanted)
