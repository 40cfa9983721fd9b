"""Both object store backends keep S3's rules (the S3 one against real SeaweedFS)."""

from __future__ import annotations

import datetime
import os
import threading
import time
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
    assert store.has_object(name, "a/b.txt")
    assert not store.has_object(name, "a/nothing.txt")
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
        for i in range(500):
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
    assert store.usage("busy").objects == 500


def test_a_write_cut_short_is_never_an_object(tmp_path: Path) -> None:
    # What a writer killed mid-write (`kill -9`, power loss) leaves behind: its
    # temporary file, outside `objects/`. Not listed, not counted, not readable as the
    # key; removed by the next start once it is old enough to be nobody's.
    root = tmp_path / "objects"
    store = FilesystemStore(root)
    store.create_bucket("cut", object_lock=False)
    store.put_object("cut", "kept", b"12345")
    incoming = root / "cut" / ".incoming"
    stale = incoming / "lost.0a1b2c.tmp"
    fresh = incoming / "writing.3d4e5f.tmp"
    for leftover in (stale, fresh):
        leftover.write_bytes(b"half of a file")
    hour_ago = time.time() - 3601
    os.utime(stale, (hour_ago, hour_ago))
    assert store.usage("cut") == BucketUsage(bytes=5, objects=1)
    with pytest.raises(FileNotFoundError):
        store.get_object("cut", "lost")
    FilesystemStore(root)  # the next start
    assert not stale.exists()
    assert fresh.exists()  # perhaps another process's write under way


def test_an_object_is_durable_and_locked_before_it_appears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Once `put_object` returns the exporter frees the file's events, so its bytes and
    # its name must be on disk; and no crash may leave a locked object unlocked.
    store = FilesystemStore(tmp_path / "objects")
    store.create_bucket("locked", object_lock=True)
    steps: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        steps.append("sync directory" if os.path.isdir(f"/proc/self/fd/{fd}") else "sync file")
        real_fsync(fd)

    def replace(source: str, target: Path) -> None:
        steps.append(f"rename into {target.parent.name}")
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store.put_object("locked", "day/log.gz", b"events", retain_until=_later(), mode="COMPLIANCE")
    assert steps == [
        "sync file",
        "rename into locks",
        "sync directory",
        "sync directory",  # day/ made: its name synced into objects/
        "sync file",
        "rename into day",
        "sync directory",
    ]


def test_a_lock_whose_object_never_arrived_holds_nothing(tmp_path: Path) -> None:
    # A crash between the lock and the object: the retried write, and a delete of the
    # key (which S3 allows for a key that does not exist), both go through.
    store = FilesystemStore(tmp_path / "objects")
    store.create_bucket("half", object_lock=True)
    store.put_object("half", "k", b"v", retain_until=_later(), mode="COMPLIANCE")
    (tmp_path / "objects" / "half" / "objects" / "k").unlink()  # as if it never arrived
    store.delete_object("half", "k")
    store.put_object("half", "k", b"again", retain_until=_later(), mode="COMPLIANCE")
    assert store.get_object("half", "k") == b"again"
    with pytest.raises(ObjectLockedError):
        store.delete_object("half", "k")


def test_the_same_object_put_again_stays_locked_as_long_as_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As S3 keeps the new version locked: the verifier key, put again daily while its
    log goes on, was refused while locked and its lock never extended (found by a
    review helper). Other bytes are refused; a lock is never shortened."""
    store = FilesystemStore(tmp_path / "objects")
    store.create_bucket("keys", object_lock=True)
    store.put_object("keys", "k", b"key", retain_until=_later(1), mode="COMPLIANCE")
    store.put_object("keys", "k", b"key", retain_until=_later(3), mode="COMPLIANCE")
    store.put_object("keys", "k", b"key", retain_until=_later(2), mode="COMPLIANCE")
    with pytest.raises(ObjectLockedError):
        store.put_object("keys", "k", b"other", retain_until=_later(5), mode="COMPLIANCE")
    in_two_days = time.time() + 2.5 * 86400
    monkeypatch.setattr("auditline.server.objectstore.time.time", lambda: in_two_days)
    with pytest.raises(ObjectLockedError):
        store.delete_object("keys", "k")
    assert store.get_object("keys", "k") == b"key"


def test_objects_are_written_read_only_with_the_umask_s_permissions(tmp_path: Path) -> None:
    """Readable as the umask allows (not private, as `mkstemp`'s are), and written by
    no one in place: a query reading a locked audit file in place could rewrite it."""
    store = FilesystemStore(tmp_path / "objects")
    store.create_bucket("modes", object_lock=False)
    store.put_object("modes", "k", b"v")
    status = Path("/proc/self/status").read_text()
    umask = int(status.split("Umask:")[1].split()[0], 8)  # read without setting it
    mode = (tmp_path / "objects" / "modes" / "objects" / "k").stat().st_mode & 0o777
    assert mode == 0o444 & ~umask
