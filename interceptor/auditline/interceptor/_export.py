"""Exporters: read the spool from their watermark and write compressed files.

A file is cut when the flush interval has passed or the file reached its size,
whichever comes first, and at midnight UTC: a file holds one day's events, the day its
key names. Each batch of events is split by log type, one file per
type, under a key fixed by the node and the batch's sequence range. The batch is
written down (its "intent") before any upload, so a retry after a failure or a
crash uploads the same events under the same keys and never a second copy under
another name; the watermark moves only after every file of the batch is stored.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable

from auditline.audit.v1 import event_pb2
from auditline.interceptor._compression import compress
from auditline.interceptor._export_config import (
    ExporterConfig,
    ExporterState,
    ExporterStatus,
    ObjectWriter,
    destination_of,
)
from auditline.interceptor._export_proofs import ExporterProofs
from auditline.interceptor._formats import FORMATS
from auditline.interceptor._integrity import Notary
from auditline.interceptor._keys import object_key
from auditline.interceptor._log_names import LOG_DIRS
from auditline.interceptor._spool import Spool
from auditline.interceptor._spool_records import ExportedFile, SpooledEvent

__all__ = ["Exporter", "encode_file"]

log = logging.getLogger("auditline.interceptor")
_DAY_NS = 86_400 * 10**9


def encode_file(config: ExporterConfig, lines: list[bytes]) -> bytes:
    """A file's bytes from its events' rendered lines (`FORMATS`): the lines compressed,
    or, for `ocsf-parquet`, their records as Parquet."""
    if config.format == "ocsf-parquet":
        from auditline.interceptor._ocsf_parquet import parquet_file

        return parquet_file(lines, version=config.ocsf_version, compression=config.compression)
    return compress(b"".join(lines), config.compression)


class Exporter(ExporterProofs):
    """One exporter's thread: batches, files, uploads, watermark, status."""

    poll_interval = 0.2
    backoff_base = 1.0
    backoff_max = 60.0

    def __init__(
        self,
        config: ExporterConfig,
        spool: Spool,
        writer: ObjectWriter,
        *,
        node_id: str,
        notary: Notary | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        # Signs a checkpoint for each batch (and when idle); None: no integrity objects.
        self.notary = notary
        self._last_checkpoint = clock()
        self._key_published_at: float | None = None
        self.spool = spool
        # Where its files go; changed by `retarget`, between batches only.
        self.writer = writer
        self._next_writer: ObjectWriter | None = None
        self._retargeting = threading.Lock()
        self.node_id = node_id or "node"
        self.clock = clock
        spool.store.register(config.name)
        self.status = ExporterStatus(watermark=spool.store.watermark(config.name))
        self._wake = threading.Event()
        self._flush_requested = threading.Event()
        self._flushed = threading.Condition()
        self._stop = threading.Event()
        self._last_cut = clock()
        self._failures = 0
        # Called with each upload's duration in seconds (the metrics hook it).
        self.on_upload: Callable[[float], None] = lambda seconds: None
        self._thread = threading.Thread(
            target=self._run, name=f"auditline-export-{config.name}", daemon=True
        )
        self._after: Exporter | None = None
        self._forget = False  # drop its watermark when its thread ends (`stop`)

    def start(self, *, after: Exporter | None = None) -> Exporter:
        """Start exporting; once `after` (the exporter this one replaces, stopped) has
        ended, when given: two threads must never export under one name, or a late
        batch of the old one would overlap the new one's files."""
        self._after = after
        self._thread.start()
        return self

    def _wait_for_predecessor(self) -> None:
        after, self._after = self._after, None
        if after is None or not after.running:
            return
        log.warning(
            "exporter %s: waiting for the exporter it replaces to finish its batch",
            self.config.name,
        )
        while after.running and not self._stop.is_set():
            after.join(self.poll_interval)

    def forget(self) -> None:
        """Drop its watermark: now if its thread is not running, else once it ends."""
        self._forget = True
        if not self._thread.is_alive():
            self.spool.store.unregister(self.config.name)

    def join(self, timeout: float | None = None) -> None:
        """Wait for a stopped exporter's thread to end (its batch under way)."""
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether its thread is still running (a stopped exporter may be finishing
        a batch)."""
        return self._thread.is_alive()

    # --- the loop ---------------------------------------------------------------------

    def _backlog(self) -> int:
        return max(self.spool.stats.last_seq - self.status.watermark, 0)

    def _due(self) -> bool:
        if not self._backlog():
            return False
        if self._flush_requested.is_set():
            return True
        if self.clock() - self._last_cut >= self.config.flush_interval:
            return True
        # Spooled (protobuf) bytes understate JSON; a full file's worth is certainly due.
        return self._backlog() * 256 >= self.config.max_file_bytes

    def _run(self) -> None:
        try:
            self._export_until_stopped()
        finally:
            if self._forget:  # after its last batch: nothing of it commits later
                self.spool.store.unregister(self.config.name)

    def _export_until_stopped(self) -> None:
        self._wait_for_predecessor()
        # Again: a predecessor told to forget its watermark has just done so.
        self.spool.store.register(self.config.name)
        self.status.watermark = self.spool.store.watermark(self.config.name)
        delay = self.poll_interval
        try:
            self._publish_key()  # at once, so that the log's key is there before any file
        except Exception as exc:  # the store is down: the first manifest publishes it
            log.warning("exporter %s: cannot publish its key yet: %s", self.config.name, exc)
        while not self._stop.is_set():
            self._wake.wait(delay)
            self._wake.clear()
            self.status.backlog = self._backlog()
            if not self._due():
                if self._flush_requested.is_set() and not self._backlog():
                    self._done_flushing()
                delay = self.poll_interval
                if self._checkpoint_due():
                    try:
                        self.checkpoint_idle()
                    except Exception as exc:  # the store is down: the next round retries
                        log.warning(
                            "exporter %s: idle checkpoint failed: %s", self.config.name, exc
                        )
                continue
            try:
                self.status.state = ExporterState.EXPORTING
                self.export_once()
            except Exception as exc:  # the store is down, refused, ...: retry later
                self._failures += 1
                self.status.state = ExporterState.ERROR
                self.status.errors += 1
                self.status.last_error = f"{type(exc).__name__}: {exc}"[:1000]
                self.status.last_error_time = self.clock()
                # The exponent is capped: an outage of a thousand attempts must not
                # overflow the float and kill this thread.
                doublings = min(self._failures - 1, 30)
                delay = min(self.backoff_base * 2**doublings, self.backoff_max)
                delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not secrecy
                log.warning(
                    "exporter %s failed (retry in %.1fs): %s",
                    self.config.name,
                    delay,
                    self.status.last_error,
                )
                continue
            if self._failures:
                log.info(
                    "exporter %s recovered after %d failed attempts",
                    self.config.name,
                    self._failures,
                )
            self._failures = 0
            self.status.state = ExporterState.WAITING
            delay = 0 if self._due() else self.poll_interval

    def _done_flushing(self) -> None:
        with self._flushed:
            self._flush_requested.clear()
            self._flushed.notify_all()

    def retarget(self, writer: ObjectWriter) -> None:
        """Write to `writer` from the next batch on: one under way ends where it began,
        its files and its manifest together (the writer was swapped under a running
        batch: files went to the old bucket, the manifest to the new one, and neither
        verified; found by a review helper). Its log there begins anew."""
        with self._retargeting:
            self._next_writer = writer
        self._wake.set()

    def _take_writer(self) -> None:
        """Before a batch (or a checkpoint): the writer `retarget` asked for, if any;
        not while a batch begun is still to be redone (its files may be in place
        where it began: it ends there)."""
        with self._retargeting:
            if self._next_writer is None or self.spool.store.intent(self.config.name):
                return
            writer, self._next_writer = self._next_writer, None
        self.writer = writer
        self._key_published_at = None  # the verifier key is published there too

    def export_once(self) -> int:
        """Write the next batch (at most one file's worth); return its event count."""
        self._take_writer()
        name = self.config.name
        store = self.spool.store
        destination = destination_of(self.config, self.writer)
        self._go_on_with_the_log_there(destination)
        watermark = store.watermark(name)
        intent = store.intent(name)
        render = FORMATS[self.config.format]
        version = self.config.ocsf_version
        if intent is not None:  # a batch that failed or was cut short by a crash: redo it
            pending: Iterable[SpooledEvent] = store.read(
                intent.first_seq - 1, limit=intent.last_seq - intent.first_seq + 1
            )
        else:
            pending = store.iterate(watermark, batch=500)
        chosen: list[tuple[SpooledEvent, bytes, int]] = []
        size, limit, first_day = 0, self.config.max_file_bytes, 0
        for item in pending:
            line = render(item.body, item.at_ns, item.end_ns, item.log_type, version)
            if not chosen:
                first_day = item.at_ns // _DAY_NS  # days since the epoch
            # A file holds one (UTC) day's events, the day its key names: a query that
            # prunes by the key's day then misses none.
            elif intent is None and (
                size + len(line) > limit or item.at_ns // _DAY_NS != first_day
            ):
                break
            chosen.append((item, line, item.log_type or event_pb2.LOG_TYPE_ACCOUNT_API))
            size += len(line)
        if not chosen:
            self._last_cut = self.clock()
            return 0
        first, last = chosen[0][0].seq, chosen[-1][0].seq
        if intent is None:
            store.begin_batch(name, first, last)
        by_log: dict[int, list[tuple[SpooledEvent, bytes]]] = {}
        wanted = self.config.log_types
        for item, line, log_type in chosen:
            if not wanted or log_type in wanted:
                by_log.setdefault(log_type, []).append((item, line))
        # The day the batch was cut by, in whole seconds: through a float, an event in
        # the last half microsecond before midnight went under the next day's key,
        # where a query of its own day does not look.
        day = datetime.datetime.fromtimestamp(chosen[0][0].at_ns // 10**9, datetime.UTC)
        retain_until = None
        if self.config.retention_days:
            retain_until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
                days=self.config.retention_days
            )
        files = []
        for log_type, items in sorted(by_log.items()):
            key = object_key(
                self.config,
                node=self.node_id,
                log=LOG_DIRS.get(log_type, "account_api"),
                day=day,
                first=first,
                last=last,
            )
            body = encode_file(self.config, [line for _, line in items])
            started = time.perf_counter()
            self.writer.put(
                key,
                body,
                retain_until=retain_until,
                mode=self.config.retention_mode if retain_until else None,
            )
            self.on_upload(time.perf_counter() - started)
            files.append(
                ExportedFile(
                    key=key,
                    first_seq=items[0][0].seq,
                    last_seq=items[-1][0].seq,
                    events=len(items),
                    bytes=len(body),
                    sha256=hashlib.sha256(body).hexdigest(),
                )
            )
        log_end = self._prove(
            first,
            [item for item, _, _ in chosen],
            by_log,
            files,
            retain_until,
            destination=destination,
        )
        store.commit_files(
            name,
            files,
            watermark=last,
            since=watermark,
            destination=destination,
            log_end=log_end,
        )
        now = self.clock()
        self._last_cut = now
        self.status.watermark = last
        self.status.last_success_time = now
        self.status.last_error = ""
        self.status.exported_events += sum(f.events for f in files)
        self.status.exported_files += len(files)
        if files:
            self.status.last_object_key = files[-1].key
        self.status.backlog = self._backlog()
        return len(chosen)

    # --- control ------------------------------------------------------------------------

    def flush(self, timeout: float = 30.0) -> bool:
        """Export everything spooled so far now; wait until done or `timeout`."""
        self.spool.flush(timeout)
        with self._flushed:
            self._flush_requested.set()
            self._wake.set()
            return self._flushed.wait_for(lambda: not self._flush_requested.is_set(), timeout)

    def stop(self, timeout: float = 30.0, *, forget: bool = False) -> None:
        """Flush (bounded by `timeout`), stop the thread, and sign the tree as it
        stands: a later cut of the log's tail cannot go unseen. `forget`: the exporter
        is gone for good: its watermark is dropped, once its thread has ended (a batch
        still under way would otherwise commit into a successor's)."""
        if forget:
            self.forget()
        flushed = self._thread.is_alive() and self.flush(timeout)
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if flushed and self.notary is not None:
            try:
                self.checkpoint_idle()
            except Exception as exc:  # the store is down: the log stays provable up to here
                log.warning("exporter %s: final checkpoint failed: %s", self.config.name, exc)
