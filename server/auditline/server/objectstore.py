"""Object store backends: the local filesystem (embedded default) and S3.

Both keep S3's rules: bucket names, object lock that can be turned on but never
off, default retention, and locked objects that cannot be overwritten or deleted
before their retention ends. Chosen by URL: `file:///path` or
`s3://?endpoint=http://host:port&region=us-east-1` (credentials from the standard
AWS variables or config files); the S3 backend is `auditline.server.s3_store`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import secrets
import shutil
import stat
import time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlparse

__all__ = [
    "BucketExistsError",
    "BucketLock",
    "BucketNotEmptyError",
    "BucketUsage",
    "FilesystemStore",
    "NoSuchBucketError",
    "ObjectLockedError",
    "ObjectStore",
    "ObjectStoreError",
    "Retention",
    "bucket_name_problem",
    "open_store",
]

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_ADDRESS = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


def bucket_name_problem(name: str) -> str | None:
    """Why `name` is not a valid S3 bucket name, or None when it is."""
    if not 3 <= len(name) <= 63:
        return "must be 3 to 63 characters long"
    if not _BUCKET_NAME.match(name):
        return (
            "may hold only lowercase letters, digits, '.' and '-', and must start and "
            "end with a letter or digit"
        )
    if ".." in name or ".-" in name or "-." in name:
        return "must not hold '..', '.-' or '-.'"
    if _IP_ADDRESS.match(name):
        return "must not look like an IP address"
    if name.startswith(("xn--", "sthree-")) or name.endswith(("-s3alias", "--ol-s3")):
        return "must not start with 'xn--' or 'sthree-' nor end with '-s3alias' or '--ol-s3'"
    return None


class ObjectStoreError(Exception):
    """The object store refused an operation for a reason the caller can act on."""


class BucketExistsError(ObjectStoreError):
    pass


class NoSuchBucketError(ObjectStoreError):
    pass


class BucketNotEmptyError(ObjectStoreError):
    pass


class ObjectLockedError(ObjectStoreError):
    pass


@dataclasses.dataclass(frozen=True, kw_only=True)
class BucketUsage:
    """Bytes and objects in a bucket, every version counted."""

    bytes: int
    objects: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Retention:
    """Object-lock retention: mode `GOVERNANCE` or `COMPLIANCE`, for `days`."""

    mode: str
    days: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class BucketLock:
    """A bucket's object-lock state as its store says: on or off, and the default
    retention when one is set."""

    object_lock: bool
    retention: Retention | None


class ObjectStore(Protocol):
    """What the account service needs of a storage system."""

    def list_buckets(self) -> list[str]:
        """Every bucket's name, sorted."""
        ...

    def bucket_lock(self, name: str) -> BucketLock: ...

    def create_bucket(
        self, name: str, *, object_lock: bool, retention: Retention | None = None
    ) -> None: ...

    def delete_bucket(self, name: str) -> None: ...

    def enable_object_lock(self, name: str, retention: Retention | None) -> None: ...

    def put_object(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        retain_until: datetime.datetime | None = None,
        mode: str | None = None,
    ) -> None: ...

    def delete_object(self, bucket: str, key: str) -> None: ...

    def get_object(self, bucket: str, key: str) -> bytes: ...

    def has_object(self, bucket: str, key: str) -> bool:
        """Whether the bucket holds `key` (errors other than its absence raise)."""
        ...

    def usage(self, bucket: str) -> BucketUsage:
        """What the bucket holds, every version counted."""
        ...


def open_store(url: str) -> ObjectStore:
    """The backend a URL names: `file:///path` or `s3://?endpoint=…&region=…`."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"a file URL names an absolute path (file:///path), not {url!r}")
        return FilesystemStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        from auditline.server.s3_store import S3Store

        return S3Store(endpoint=query.get("endpoint"), region=query.get("region"))
    raise ValueError(f"object store URL must start with file:// or s3://, not {url!r}")


# --- the local filesystem ---------------------------------------------------------


# Files being written into a bucket's `objects/`: beside it, so that they are never
# listed, counted in its usage or taken for an object, and on the same filesystem, so
# that a rename moves them in whole.
_INCOMING = ".incoming"
# A temporary file (`*.tmp`, in `_INCOMING`, `locks/` or the bucket's directory) older
# than this is from a writer that died (`kill -9`, power loss): one still writing
# renames its file within seconds. Removed when a store is opened.
_STALE_INCOMING_SECONDS = 3600.0


def _write_whole(path: Path, data: bytes, *, scratch: Path) -> None:
    """Put `data` at `path` durably and whole: written to a file of its own in
    `scratch` (same filesystem), flushed to disk, renamed into place, and the rename
    flushed too. A reader in another process (a replica, the audit worker) or the next
    start after a crash sees the old file or the new one, never part of one; once this
    returns, the exporter frees the events in the file, so it must survive a power
    loss."""
    scratch.mkdir(parents=True, exist_ok=True)
    temporary = scratch / f"{path.name[:64]}.{secrets.token_hex(8)}.tmp"
    # Not `tempfile.mkstemp`, whose files are private (0600) whatever the umask. Read
    # only: the store replaces a file whole and never writes one in place, and nothing
    # else may (a locked audit file read in place by a query, say).
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def _make_directories(path: Path) -> None:
    """`path` and any missing parents, each new entry synced in its parent: the
    object written into it must not vanish with its directory after a power loss."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        _sync_directory(directory.parent)


def _sync_directory(path: Path) -> None:
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _write_json(path: Path, value: dict[str, Any]) -> None:
    _write_whole(path, json.dumps(value).encode(), scratch=path.parent)


def _remove_stale(scratch: Path, now: float) -> None:
    for leftover in scratch.glob("*.tmp") if scratch.is_dir() else ():
        try:
            if now - leftover.stat().st_mtime > _STALE_INCOMING_SECONDS:
                leftover.unlink()
        except FileNotFoundError:
            continue  # renamed into place or removed meanwhile


class FilesystemStore:
    """Buckets as directories under `root`; lock state in a JSON file beside each.

    It enforces object lock against this service's own calls, not against a local
    administrator, who can edit or delete the files directly (see the README).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        now = time.time()
        for bucket in root.glob("*/.bucket.json"):
            _remove_stale(bucket.parent / _INCOMING, now)
            _remove_stale(bucket.parent / "locks", now)
            _remove_stale(bucket.parent, now)

    def _bucket(self, name: str) -> Path:
        path = self.root / name
        if not (path / ".bucket.json").exists():
            raise NoSuchBucketError(name)
        return path

    def _config(self, bucket: Path) -> dict[str, Any]:
        return dict(json.loads((bucket / ".bucket.json").read_text()))

    def _object(self, bucket: Path, key: str) -> Path:
        target = (bucket / "objects" / key).resolve()
        if not target.is_relative_to((bucket / "objects").resolve()):
            raise ObjectStoreError(f"object key {key!r} leaves the bucket")
        return target

    def _lock_file(self, bucket: Path, key: str) -> Path:
        return bucket / "locks" / (key.replace("/", "%2F") + ".json")

    def list_buckets(self) -> list[str]:
        return sorted(p.parent.name for p in self.root.glob("*/.bucket.json"))

    def bucket_lock(self, name: str) -> BucketLock:
        config = self._config(self._bucket(name))
        retention = config["retention"]
        return BucketLock(
            object_lock=bool(config["object_lock"]),
            retention=Retention(**retention) if retention else None,
        )

    def create_bucket(
        self, name: str, *, object_lock: bool, retention: Retention | None = None
    ) -> None:
        path = self.root / name
        try:
            path.mkdir()
        except FileExistsError:
            raise BucketExistsError(name) from None
        (path / "objects").mkdir()
        (path / "locks").mkdir()
        config = {
            "object_lock": object_lock,
            "retention": dataclasses.asdict(retention) if retention else None,
        }
        _write_json(path / ".bucket.json", config)

    def delete_bucket(self, name: str) -> None:
        path = self._bucket(name)
        if any(p.is_file() for p in (path / "objects").rglob("*")):
            raise BucketNotEmptyError(name)
        shutil.rmtree(path)

    def enable_object_lock(self, name: str, retention: Retention | None) -> None:
        path = self._bucket(name)
        config = self._config(path)
        config["object_lock"] = True
        config["retention"] = dataclasses.asdict(retention) if retention else None
        _write_json(path / ".bucket.json", config)

    def _locked_until(self, bucket: Path, key: str) -> float:
        lock = self._lock_file(bucket, key)
        if not lock.exists():
            return 0.0
        return float(json.loads(lock.read_text())["until"])

    def put_object(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        retain_until: datetime.datetime | None = None,
        mode: str | None = None,
    ) -> None:
        path = self._bucket(bucket)
        target = self._object(path, key)
        locked_until = self._locked_until(path, key) if target.exists() else 0.0
        if locked_until > time.time():
            # The same bytes again, locked for longer: the lock is extended, as S3
            # keeps a new version locked (the verifier key, put again daily while its
            # log goes on; found by a review helper). Never shortened.
            if target.read_bytes() != data:
                raise ObjectLockedError(f"{bucket}/{key} is locked")
            if retain_until is not None and retain_until.timestamp() > locked_until:
                lock = self._lock_file(path, key)
                held = json.loads(lock.read_text())
                _write_json(lock, {**held, "until": retain_until.timestamp()})
            return
        config = self._config(path)
        if retain_until is None and config["object_lock"] and config["retention"]:
            days = config["retention"]["days"]
            retain_until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)
        if retain_until is not None:
            if not config["object_lock"]:
                raise ObjectStoreError(f"bucket {bucket} has no object lock")
            # The lock before the object: an object is never seen, even after a crash
            # between the two, without the retention it was written with. A lock whose
            # object never arrived keeps nothing from being written.
            _write_json(
                self._lock_file(path, key),
                {"until": retain_until.timestamp(), "mode": mode or "COMPLIANCE"},
            )
        _make_directories(target.parent)
        _write_whole(target, data, scratch=path / _INCOMING)

    def delete_object(self, bucket: str, key: str) -> None:
        path = self._bucket(bucket)
        target = self._object(path, key)
        if target.exists() and self._locked_until(path, key) > time.time():
            raise ObjectLockedError(f"{bucket}/{key} is locked")
        target.unlink(missing_ok=True)
        self._lock_file(path, key).unlink(missing_ok=True)

    def get_object(self, bucket: str, key: str) -> bytes:
        return self._object(self._bucket(bucket), key).read_bytes()

    def has_object(self, bucket: str, key: str) -> bool:
        return self._object(self._bucket(bucket), key).is_file()

    def usage(self, bucket: str) -> BucketUsage:
        sizes = []
        for path in (self._bucket(bucket) / "objects").rglob("*"):
            try:
                status = path.stat()
            except FileNotFoundError:
                continue  # an exporter's temporary file, renamed since it was listed
            if stat.S_ISREG(status.st_mode):
                sizes.append(status.st_size)
        return BucketUsage(bytes=sum(sizes), objects=len(sizes))
