"""The spool's writes through a full disk: write what fits, spend the reserve, turn
degraded, and recover by itself once the disk has room again.

Separate from the spool's queue and admission (`_spool.py`) because this is the part
that meets the disk's failures; the spool asks it to insert, and reads `reason`.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

from auditline.interceptor._losses import Losses
from auditline.interceptor._spool_records import SpoolStats, StoredEvent
from auditline.interceptor._spool_store import SQLITE_FULL, SpoolStore

__all__ = ["SpoolDisk"]

log = logging.getLogger("auditline.interceptor")

_DISK_FULL = "the spool's disk is full"


def _is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL


class SpoolDisk:
    """Inserts into the store, and knows whether the spool is degraded (and why)."""

    def __init__(
        self, store: SpoolStore, stats: SpoolStats, on_change: Callable[[str], None]
    ) -> None:
        self.store = store
        self.stats = stats
        # Told the new reason whenever it changes ("" on recovery), from the writer.
        self._on_change = on_change
        self.reason = "" if store.reserve_held else "the disk has no room for the reserve"
        stats.degraded = bool(self.reason)
        if self.reason:  # said: a node that starts degraded refused calls with no word why
            log.error(
                "audit spool degraded from the start: %s (the spool's reserve, "
                "--spool-reserve-bytes or Spool(reserve_bytes=...), must fit on its disk)",
                self.reason,
            )
        self._next_recovery = 0.0

    def insert_what_fits(
        self, calls: list[list[StoredEvent]], *, settles: Losses | None = None
    ) -> int:
        """Insert as many of the calls' events as the disk takes, in order and a call's
        events all or none (halving the batch by calls while it is full); return how
        many events. Raises when not even the first call's fit: a fail-closed caller
        is refused only with none of its events kept. `settles`: the first call
        is the drop marker of these losses (`SpoolStore.insert`)."""
        items = [item for call in calls for item in call]
        try:
            self._insert(items, settles)
            return len(items)
        except sqlite3.Error as exc:
            if not _is_full(exc) or len(calls) == 1:
                raise
        half = len(calls) // 2
        first_half = sum(len(call) for call in calls[:half])
        written = self.insert_what_fits(calls[:half], settles=settles)
        if written < first_half:
            return written
        try:
            return first_half + self.insert_what_fits(calls[half:])
        except sqlite3.Error:
            return first_half

    def _insert(self, items: list[StoredEvent], settles: Losses | None) -> int:
        """Insert; on a full disk, release the reserve and try once more."""
        try:
            return self.store.insert(items, settles=settles)
        except sqlite3.Error as exc:
            if not _is_full(exc) or not self.store.reserve_held:
                raise
            self.store.release_reserve()
            log.error("audit spool degraded: the disk is full; reserve released, new calls wait")
            self._set(_DISK_FULL)
            return self.store.insert(items, settles=settles)

    def failed(self, exc: sqlite3.Error | None) -> None:
        """A write failed (`exc`; None: part of a batch did not fit on the disk)."""
        self.stats.write_errors += 1
        if exc is None or _is_full(exc):
            reason = _DISK_FULL
        else:
            reason = f"the spool cannot write ({type(exc).__name__}: {exc})"
        if self.reason != reason:
            log.error("audit spool degraded: %s; events wait in memory and are retried", reason)
        self._set(reason)

    def _set(self, reason: str) -> None:
        changed = reason != self.reason
        self.reason = reason
        self.stats.degraded = True
        if changed:
            self._on_change(reason)

    def recover(self, retry_interval: float) -> None:
        """Every queued event is written: take the reserve back if there is room (tried
        at most once per `retry_interval`)."""
        now = time.monotonic()
        if now < self._next_recovery:
            return
        self._next_recovery = now + retry_interval
        if self.store.restore_reserve():
            log.warning("audit spool recovered: writing again, reserve restored")
            self.reason = ""
            self.stats.degraded = False
            self._on_change("")
