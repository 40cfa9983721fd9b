"""At start: the bucket catalogue (the state store) and the object store must agree on
which buckets exist, so that one name never gets two answers (`CreateBucket` saying
ALREADY_EXISTS while `GetBucket` says NOT_FOUND).

What a disagreement does is the operator's choice (`--bucket-mismatch`):

- `adopt` (default): buckets the store has and the catalogue does not are catalogued,
  with the lock settings the store reports; catalogued buckets the store lacks stop
  the start (a wrong `--object-store` must not empty the catalogue).
- `follow-store`: the store is the truth both ways: as `adopt`, and catalogue entries
  the store lacks are forgotten (after buckets were deleted in the store directly).
- `leave`: for a store shared with others: its other buckets stay outside the
  service, named in the log; their names are taken (`CreateBucket` answers
  ALREADY_EXISTS, `GetBucket` NOT_FOUND, as for another S3 account's bucket).
  Catalogued buckets the store lacks stop the start.
- `refuse`: any disagreement stops the start.

Adopted and forgotten buckets are named in the log and in one audited
`BucketsReconciled` event. The audit target bucket missing from the store stops the
start under every policy: an audit bucket that disappeared is for a person to look
into, not to paper over.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import sqlalchemy as sa

from auditline.account.v1 import bucket_pb2
from auditline.server.db import Database, insert_new, tables
from auditline.server.objectstore import NoSuchBucketError, ObjectStore

__all__ = [
    "BUCKETS_RECONCILED_EVENT",
    "BUCKET_MISMATCH_POLICIES",
    "BucketMismatchError",
    "Reconciliation",
    "reconcile_buckets",
]

log = logging.getLogger("auditline.server")

BUCKET_MISMATCH_POLICIES = ("adopt", "follow-store", "leave", "refuse")
# The account-log event of a start that adopted or forgot buckets.
BUCKETS_RECONCILED_EVENT = "BucketsReconciled"

_MODE_NUMBERS = {
    "GOVERNANCE": bucket_pb2.RETENTION_MODE_GOVERNANCE,
    "COMPLIANCE": bucket_pb2.RETENTION_MODE_COMPLIANCE,
}
_SHOWN = 20  # names listed in a log line or an error; the rest are counted


class BucketMismatchError(Exception):
    """The catalogue and the object store disagree in a way the policy does not settle."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Reconciliation:
    """What a start found and did."""

    left: tuple[str, ...] = ()  # in the store only, left outside the service
    adopted: tuple[str, ...] = ()  # in the store only, now catalogued
    forgotten: tuple[str, ...] = ()  # in the catalogue only, now removed from it

    @property
    def changed(self) -> bool:
        return bool(self.adopted or self.forgotten)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Difference:
    store_only: tuple[str, ...]
    catalogue_only: tuple[str, ...]


def _names(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _catalogued(db: Database) -> set[str]:
    with db.begin() as connection:
        return set(connection.execute(sa.select(tables.buckets.c.name)).scalars())


def _difference(db: Database, store: ObjectStore, *, settle: float) -> _Difference:
    """The disagreement that lasts: a create or delete on another replica changes the
    store a moment before its catalogue row commits, so a difference is read again
    until it holds still or `settle` seconds pass."""
    deadline = time.monotonic() + settle
    while True:
        stored = set(store.list_buckets())
        catalogued = _catalogued(db)
        difference = _Difference(
            store_only=tuple(sorted(stored - catalogued)),
            catalogue_only=tuple(sorted(catalogued - stored)),
        )
        if not (difference.store_only or difference.catalogue_only):
            return difference
        if time.monotonic() >= deadline:
            return difference
        time.sleep(0.2)  # a poll with a deadline: the other replica's commit is not observable


def reconcile_buckets(
    db: Database,
    store: ObjectStore,
    *,
    policy: str,
    audit_bucket: str,
    clock: Callable[[], float],
    settle: float = 2.0,
) -> Reconciliation:
    """Compare the catalogue with the store and apply `policy` (module docstring)."""
    if policy not in BUCKET_MISMATCH_POLICIES:
        raise ValueError(f"bucket mismatch policy must be one of {BUCKET_MISMATCH_POLICIES}")
    difference = _difference(db, store, settle=settle)
    if audit_bucket in difference.catalogue_only:
        raise BucketMismatchError(
            f"the audit target bucket {audit_bucket} is not in the object store: if it was "
            "deleted there, find out why; recreate it with object lock, or point "
            "--object-store at the store that holds it"
        )
    if difference.catalogue_only and policy != "follow-store":
        raise BucketMismatchError(
            f"the catalogue names {len(difference.catalogue_only)} bucket(s) the object store "
            f"does not have ({_names(difference.catalogue_only)}): is --object-store the store "
            "this state belongs with? If they were deleted in the store, start once with "
            "--bucket-mismatch=follow-store to forget them"
        )
    if difference.store_only and policy == "refuse":
        raise BucketMismatchError(
            f"the object store holds {len(difference.store_only)} bucket(s) the catalogue "
            f"does not ({_names(difference.store_only)}); start with --bucket-mismatch=adopt "
            "to catalogue them, or =leave to leave them outside the service"
        )
    if policy == "leave":
        if difference.store_only:
            log.warning(
                "the object store holds %d bucket(s) outside the catalogue (%s): left "
                "alone (--bucket-mismatch=leave), and their names are taken",
                len(difference.store_only),
                _names(difference.store_only),
            )
        return Reconciliation(left=difference.store_only)
    return _adopt(db, store, difference, clock)


def _adopt(
    db: Database, store: ObjectStore, difference: _Difference, clock: Callable[[], float]
) -> Reconciliation:
    adopted: list[str] = []
    forgotten: list[str] = []
    with db.begin() as connection:
        for name in difference.store_only:
            try:
                lock = store.bucket_lock(name)
            except NoSuchBucketError:
                continue  # deleted in the store meanwhile
            retention = lock.retention
            row = {
                "name": name,
                "immutable": lock.object_lock,
                "retention_mode": _MODE_NUMBERS.get(retention.mode, 0) if retention else 0,
                "retention_days": retention.days if retention else 0,
                "audit_logging": False,
                "created_at": clock(),
            }
            # Replicas adopting at once: one inserts each row, and only it reports it.
            if insert_new(connection, tables.buckets, row, ("name",)):
                adopted.append(name)
        for name in difference.catalogue_only:
            removed = connection.execute(
                tables.buckets.delete().where(tables.buckets.c.name == name)
            )
            if removed.rowcount:
                forgotten.append(name)
    if adopted:
        log.warning(
            "adopted %d bucket(s) of the object store into the catalogue: %s",
            len(adopted),
            _names(tuple(adopted)),
        )
    if forgotten:
        log.warning(
            "forgot %d catalogued bucket(s) the object store no longer has: %s",
            len(forgotten),
            _names(tuple(forgotten)),
        )
    return Reconciliation(adopted=tuple(adopted), forgotten=tuple(forgotten))
