"""A state store and an object store that disagree on a bucket, met at start: adopted
and said so, forgotten when asked, or a clear refusal; never two answers for a name."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf.json_format import MessageToDict

from auditline.account.v1 import bucket_pb2
from auditline.audit.v1 import audit_log_pb2
from auditline.client import Client
from auditline.server.bucket_reconciliation import (
    BucketMismatchError,
    Reconciliation,
    reconcile_buckets,
)
from auditline.server.db import Database, tables
from auditline.server.objectstore import FilesystemStore, ObjectStore, Retention
from auditline.server.s3_store import S3Store
from tests.conftest import ServeFactory
from tests.support.account_server import ADMIN_KEY, ADMIN_SECRET, admin_env
from tests.support.clients import login
from tests.support.postgres import PostgreSQL
from tests.support.seaweedfs import SeaweedFS


def _name() -> str:
    return f"r-{uuid.uuid4().hex[:12]}"


def _catalogue(db: Database) -> dict[str, dict[str, object]]:
    with db.begin() as connection:
        return {
            row["name"]: dict(row)
            for row in connection.execute(sa.select(tables.buckets)).mappings()
        }


def _catalogue_bucket(db: Database, name: str) -> None:
    with db.begin() as connection:
        connection.execute(
            tables.buckets.insert().values(
                name=name, immutable=False, retention_mode=0, retention_days=0,
                audit_logging=False, created_at=time.time(),
            )
        )  # fmt: skip


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(f"sqlite:///{tmp_path / 'state.db'}")


@pytest.fixture
def store(tmp_path: Path) -> FilesystemStore:
    return FilesystemStore(tmp_path / "objects")


def _reconcile(db: Database, store: ObjectStore, policy: str, audit: str = "") -> Reconciliation:
    return reconcile_buckets(
        db, store, policy=policy, audit_bucket=audit, clock=time.time, settle=0.0
    )


def test_agreement_changes_nothing_under_any_policy(db: Database, store: FilesystemStore) -> None:
    name = _name()
    store.create_bucket(name, object_lock=False)
    _catalogue_bucket(db, name)
    for policy in ("adopt", "follow-store", "leave", "refuse"):
        assert _reconcile(db, store, policy) == Reconciliation()


def test_adopt_catalogues_the_stores_buckets_with_their_lock(
    db: Database, store: FilesystemStore
) -> None:
    plain, kept = _name(), _name()
    store.create_bucket(plain, object_lock=False)
    store.create_bucket(kept, object_lock=True, retention=Retention(mode="COMPLIANCE", days=7))
    result = _reconcile(db, store, "adopt")
    assert result == Reconciliation(adopted=tuple(sorted([plain, kept])))
    rows = _catalogue(db)
    assert rows[plain]["immutable"] is False
    assert (
        rows[kept]["immutable"],
        rows[kept]["retention_mode"],
        rows[kept]["retention_days"],
    ) == (
        True,
        bucket_pb2.RETENTION_MODE_COMPLIANCE,
        7,
    )
    assert _reconcile(db, store, "adopt") == Reconciliation()  # once


@pytest.mark.parametrize("policy", ["adopt", "leave", "refuse"])
def test_a_catalogued_bucket_the_store_lacks_stops_the_start(
    db: Database, store: FilesystemStore, policy: str
) -> None:
    gone = _name()
    _catalogue_bucket(db, gone)
    with pytest.raises(BucketMismatchError, match=rf"{gone}.*--bucket-mismatch=follow-store"):
        _reconcile(db, store, policy)
    assert gone in _catalogue(db)


def test_follow_store_forgets_what_the_store_lacks_and_adopts_the_rest(
    db: Database, store: FilesystemStore
) -> None:
    gone, new = _name(), _name()
    _catalogue_bucket(db, gone)
    store.create_bucket(new, object_lock=True)
    assert _reconcile(db, store, "follow-store") == Reconciliation(
        adopted=(new,), forgotten=(gone,)
    )
    assert set(_catalogue(db)) == {new}


def test_leave_names_the_stores_buckets_and_keeps_them_out(
    db: Database, store: FilesystemStore, caplog: pytest.LogCaptureFixture
) -> None:
    other = _name()
    store.create_bucket(other, object_lock=False)
    assert _reconcile(db, store, "leave") == Reconciliation(left=(other,))
    assert _catalogue(db) == {}
    assert other in caplog.text


def test_refuse_names_the_stores_buckets(db: Database, store: FilesystemStore) -> None:
    other = _name()
    store.create_bucket(other, object_lock=False)
    with pytest.raises(BucketMismatchError, match=rf"holds 1 bucket\(s\).*{other}"):
        _reconcile(db, store, "refuse")


def test_a_missing_audit_bucket_is_never_forgotten(db: Database, store: FilesystemStore) -> None:
    audit = _name()
    _catalogue_bucket(db, audit)
    with pytest.raises(BucketMismatchError, match=rf"audit target bucket {audit}"):
        _reconcile(db, store, "follow-store", audit=audit)
    assert audit in _catalogue(db)


def test_a_delete_committing_meanwhile_is_not_a_disagreement(
    db: Database, store: FilesystemStore
) -> None:
    # Another replica's DeleteBucket: the store's bucket goes first, its row a moment
    # later. The start reads again until the difference holds still.
    name = _name()
    _catalogue_bucket(db, name)

    def commit_delete() -> None:
        with db.begin() as connection:
            connection.execute(tables.buckets.delete().where(tables.buckets.c.name == name))

    timer = threading.Timer(0.3, commit_delete)
    timer.start()
    try:
        result = reconcile_buckets(
            db, store, policy="refuse", audit_bucket="", clock=time.time, settle=5.0
        )
    finally:
        timer.join()
    assert result == Reconciliation()


@pytest.mark.seaweedfs
def test_replicas_adopting_at_once_adopt_each_bucket_once(
    postgres: PostgreSQL, seaweedfs: SeaweedFS
) -> None:
    store = S3Store(client=seaweedfs.client())
    names = [_name() for _ in range(4)]
    for name in names:
        store.create_bucket(name, object_lock=name == names[0])
    database = Database(postgres.new_database())
    results: list[Reconciliation] = []
    failures: list[BaseException] = []
    start = threading.Barrier(3)

    def replica() -> None:
        try:
            start.wait()
            results.append(_reconcile(Database(database.url), store, "adopt"))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    adopted = [name for result in results for name in result.adopted if name in names]
    assert sorted(adopted) == sorted(names)  # each by exactly one replica
    rows = _catalogue(database)
    assert rows[names[0]]["immutable"] is True
    assert all(rows[name]["immutable"] is False for name in names[1:])


# --- through `auditline serve` ------------------------------------------------------


def _reconciled(api: Client) -> list[dict[str, list[str]]]:
    """What each BucketsReconciled event in the server's log says it adopted and forgot."""
    events = api.events.ListEvents(
        audit_log_pb2.ListEventsRequest(
            filter=audit_log_pb2.EventFilter(event_names=["BucketsReconciled"])
        )
    ).events
    params = [MessageToDict(event.request.request_params) for event in events]
    return [{key: list(p[key]) for key in ("adopted", "forgotten")} for p in params]


def test_a_fresh_state_against_a_used_store_adopts_its_buckets(
    serve: ServeFactory, tmp_path: Path
) -> None:
    # The new user: a second data dir on the first one's object store.
    objects = (tmp_path / "shared-objects").as_uri()
    env = admin_env()
    first = serve("--object-store", objects, env=env)
    api = login(first.target, ADMIN_KEY, ADMIN_SECRET)
    name = _name()
    api.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=name, immutable=True))
    assert first.terminate() == 0

    second = serve("--object-store", objects, env=env)
    assert f"adopted 1 bucket(s) of the object store into the catalogue: {name}" in second.log()
    api = login(second.target, ADMIN_KEY, ADMIN_SECRET)
    got = api.buckets.GetBucket(bucket_pb2.GetBucketRequest(name=f"buckets/{name}")).bucket
    assert got.immutable
    assert _reconciled(api) == [{"adopted": [name], "forgotten": []}]
    with pytest.raises(grpc.RpcError) as created:
        api.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=name))
    assert created.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_a_bucket_deleted_in_the_store_stops_the_start_until_forgotten(
    serve: ServeFactory, tmp_path: Path
) -> None:
    env = admin_env()
    data = tmp_path / "node"
    first = serve(data_dir=data, env=env)
    api = login(first.target, ADMIN_KEY, ADMIN_SECRET)
    name = _name()
    api.buckets.CreateBucket(bucket_pb2.CreateBucketRequest(bucket_id=name))
    assert first.terminate() == 0
    shutil.rmtree(data / "objects" / name)  # deleted behind the service's back

    refused = rf"(?s)exited 1.*{name}.*--bucket-mismatch=follow-store"
    with pytest.raises(RuntimeError, match=refused):
        serve(data_dir=data, env=env)
    again = serve("--bucket-mismatch", "follow-store", data_dir=data, env=env)
    api = login(again.target, ADMIN_KEY, ADMIN_SECRET)
    with pytest.raises(grpc.RpcError) as got:
        api.buckets.GetBucket(bucket_pb2.GetBucketRequest(name=f"buckets/{name}"))
    assert got.value.code() == grpc.StatusCode.NOT_FOUND
    assert _reconciled(api) == [{"adopted": [], "forgotten": [name]}]


def test_refuse_stops_a_start_on_a_used_store(serve: ServeFactory, tmp_path: Path) -> None:
    other = _name()
    FilesystemStore(tmp_path / "shared-objects").create_bucket(other, object_lock=False)
    objects = (tmp_path / "shared-objects").as_uri()
    with pytest.raises(RuntimeError, match=rf"(?s)exited 1.*BucketMismatchError.*{other}"):
        serve("--object-store", objects, "--bucket-mismatch", "refuse", env=admin_env())
