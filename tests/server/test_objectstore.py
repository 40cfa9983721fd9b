"""Both object store backends keep S3's rules (the S3 one against real SeaweedFS)."""

from __future__ import annotations

import datetime
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from auditline.server.objectstore import (
    BucketExistsError,
    BucketLock,
    BucketNotEmptyError,
    BucketUsage,
    FilesystemStore,
    NoSuchBucketError,
    ObjectLockedError,
    ObjectStore,
    Retention,
    bucket_name_problem,
)
from auditline.server.s3_store import S3Store
from tests.support.seaweedfs import SeaweedFS


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "file":
        yield FilesystemStore(tmp_path / "objects")
    else:
        seaweed: SeaweedFS = request.getfixturevalue("seaweedfs")
        yield S3Store(client=seaweed.client())


def _name() -> str:
    return f"b-{uuid.uuid4().hex[:16]}"


def _later(days: int = 1) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)


def test_bucket_lifecycle(store: ObjectStore) -> None:
    name = _name()
    store.create_bucket(name, object_lock=False)
    with pytest.raises(BucketExistsError):
        store.create_bucket(name, object_lock=False)
    store.put_object(name, "a/b.txt", b"hello")
    assert store.get_object(name, "a/b.txt") == b"hello"
    assert store.usage(name) == BucketUsage(bytes=5, objects=1)
    with pytest.raises(BucketNotEmptyError):
        store.delete_bucket(name)
    store.delete_object(name, "a/b.txt")
    store.delete_bucket(name)


def test_locked_objects_cannot_be_deleted(store: ObjectStore) -> None:
    name = _name()
    store.create_bucket(name, object_lock=True)
    store.put_object(name, "log.gz", b"x", retain_until=_later(), mode="COMPLIANCE")
    with pytest.raises(ObjectLockedError):
        store.delete_object(name, "log.gz")
    assert store.get_object(name, "log.gz") == b"x"


def test_default_retention_locks_new_objects(store: ObjectStore) -> None:
    name = _name()
    store.create_bucket(name, object_lock=True, retention=Retention(mode="COMPLIANCE", days=1))
    store.put_object(name, "k", b"v")
    with pytest.raises(ObjectLockedError):
        store.delete_object(name, "k")


def test_object_lock_can_be_turned_on_later(store: ObjectStore) -> None:
    name = _name()
    store.create_bucket(name, object_lock=False)
    store.enable_object_lock(name, Retention(mode="GOVERNANCE", days=1))
    store.put_object(name, "k", b"v", retain_until=_later(), mode="COMPLIANCE")
    with pytest.raises(ObjectLockedError):
        store.delete_object(name, "k")


def test_buckets_are_listed_with_their_lock_settings(store: ObjectStore) -> None:
    plain, locked, kept = _name(), _name(), _name()
    store.create_bucket(plain, object_lock=False)
    store.create_bucket(locked, object_lock=True)
    store.create_bucket(kept, object_lock=True, retention=Retention(mode="COMPLIANCE", days=3))
    listed = store.list_buckets()
    assert {plain, locked, kept} <= set(listed)
    assert listed == sorted(listed)
    assert store.bucket_lock(plain) == BucketLock(object_lock=False, retention=None)
    assert store.bucket_lock(locked) == BucketLock(object_lock=True, retention=None)
    assert store.bucket_lock(kept) == BucketLock(
        object_lock=True, retention=Retention(mode="COMPLIANCE", days=3)
    )
    store.enable_object_lock(plain, Retention(mode="GOVERNANCE", days=2))
    assert store.bucket_lock(plain) == BucketLock(
        object_lock=True, retention=Retention(mode="GOVERNANCE", days=2)
    )
    with pytest.raises(NoSuchBucketError):
        store.bucket_lock(_name())


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("logs", True),
        ("my.audit-logs-2026", True),
        ("ab", False),
        ("a" * 64, False),
        ("Logs", False),
        ("-logs", False),
        ("logs-", False),
        ("a..b", False),
        ("192.168.1.1", False),
        ("xn--logs", False),
        ("logs-s3alias", False),
        ("lo_gs", False),
    ],
)
def test_bucket_names_follow_s3_rules(name: str, ok: bool) -> None:
    assert (bucket_name_problem(name) is None) == ok


def test_store_urls(tmp_path: Path) -> None:
    from auditline.server.objectstore import open_store

    store = open_store((tmp_path / "objects").as_uri())
    assert isinstance(store, FilesystemStore)
    assert store.root == tmp_path / "objects"
    with pytest.raises(ValueError, match="absolute path"):
        open_store("file://data/objects")  # a relative path would become a host name
    with pytest.raises(ValueError, match="file:// or s3://"):
        open_store("ftp://x")


def test_usage_while_objects_are_written(tmp_path: Path) -> None:
    # An exporter writes through a temporary file renamed into place: a usage count
    # running meanwhile (ExporterService checks the target) must not fail on it.
    store = FilesystemStore(tmp_path / "objects")
    store.create_bucket("busy", object_lock=False)
    writing = threading.Event()
    done = threading.Event()

    def write() -> None:
        for i in range(3000):
            store.put_object("busy", f"k/{i}", b"x" * 100)
            writing.set()
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    writing.wait(10)
    try:
        while not done.is_set():
            store.usage("busy")
    finally:
        writer.join()
    assert store.usage("busy").objects == 3000
