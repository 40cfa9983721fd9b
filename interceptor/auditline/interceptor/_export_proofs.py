"""An exporter's proofs: the manifest with a signed checkpoint after each batch, one
when idle (so that a cut of the log's tail cannot go unseen), and the verifier key
published before any file. `Exporter`'s base class; its state is the exporter's."""

from __future__ import annotations

import abc
import datetime
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from auditline.interceptor._export_config import ExporterConfig, ObjectWriter, destination_of
from auditline.interceptor._integrity import FileEntry, Notary, runs
from auditline.interceptor._log_names import LOG_DIRS
from auditline.interceptor._note import Checkpoint
from auditline.interceptor._spool import Spool
from auditline.interceptor._spool_records import DestinationLog, ExportedFile, SpooledEvent

__all__ = ["ExporterProofs"]

log = logging.getLogger("auditline.interceptor")


class ExporterProofs(abc.ABC):
    """The state below is the exporter's, set in its constructor."""

    config: ExporterConfig
    notary: Notary | None
    spool: Spool
    writer: ObjectWriter
    clock: Callable[[], float]
    _last_checkpoint: float
    _key_published_at: float | None  # by `clock`; None: to publish at the next chance

    @abc.abstractmethod
    def _backlog(self) -> int:
        """Events spooled that this exporter has not passed yet."""

    @abc.abstractmethod
    def _take_writer(self) -> None:
        """Switch to the writer asked for, between batches."""

    def _retention(self) -> dict[str, Any]:
        if not self.config.retention_days:
            return {"retain_until": None, "mode": None}
        until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
            days=self.config.retention_days
        )
        return {"retain_until": until, "mode": self.config.retention_mode}

    def _prove(
        self,
        first: int,
        events: list[SpooledEvent],
        by_log: dict[int, list[tuple[SpooledEvent, bytes]]],
        files: list[ExportedFile],
        retain_until: datetime.datetime | None,
        *,
        destination: str,
    ) -> DestinationLog | None:
        """Write the batch's manifest with its signed checkpoint (and, for the
        exporter's first batch at `destination`, the signed note that its log begins
        there, or goes on there after events exported elsewhere); return where the
        log there then ends."""
        notary = self.notary
        if notary is None:
            return None
        store = self.spool.store
        starts_log, resumes_after = False, None
        there = store.destination_log(destination)
        if not store.has_begun(self.config.name, destination):
            there = self._still_there(there)
            if there is None:
                starts_log = True  # nothing of this node's log is there
            elif there.last_seq + 1 < first:  # back after writing elsewhere
                resumes_after = Checkpoint(origin=notary.origin, size=there.size, root=there.root)
        # The log's name: made from where and at which event it began, so that a batch
        # redone after a crash is signed the same.
        log_id = there.log_id if there is not None else _log_id(notary, destination, first)
        last = events[-1].seq
        entries = [
            FileEntry(
                key=exported.key,
                sha256=exported.sha256,
                bytes=exported.bytes,
                format=self.config.format,
                compression=self.config.compression,
                log_type=LOG_DIRS.get(log_type, "account_api"),
                seqs=runs(item.seq for item, _ in items),
            )
            for exported, (log_type, items) in zip(files, sorted(by_log.items()), strict=True)
        ]
        omitted: list[tuple[int, bytes]] = []
        if self.config.log_types:  # events of the logs this exporter leaves out
            written = {item.seq for items in by_log.values() for item, _ in items}
            left_out = [e.seq for e in events if e.seq not in written]
            if left_out:
                leaves = store.leaves(first, last)
                omitted = [(seq, leaves[seq - first]) for seq in left_out]
        self._publish_key()
        after = store.frontier_at(last)
        manifest = notary.manifest(
            prefix=self.config.prefix,
            exporter=self.config.name,
            tree_base=store.tree.base,
            first_seq=first,
            before=store.frontier_at(first - 1),
            after=after,
            files=entries,
            omitted=omitted,
            created_ns=events[-1].end_ns,
            starts_log=starts_log,
            resumes_after=resumes_after,
            log_id=log_id,
        )
        mode = self.config.retention_mode if retain_until else None
        self.writer.put(manifest.key, manifest.body, retain_until=retain_until, mode=mode)
        self._last_checkpoint = self.clock()
        return DestinationLog(
            log_id=log_id,
            manifest_key=manifest.key,
            log_types=frozenset(self.config.log_types),
            last_seq=last,
            size=after.size,
            root=after.root(),
        )

    def _go_on_with_the_log_there(self, destination: str) -> None:
        """An exporter new at `destination`, where this node's log already is (an
        exporter there was deleted and another made in its place) goes on with that
        log from where it ends, rather than exporting those events again: its batches
        cut again overlapped the ones there, their manifests collided or disagreed,
        the log no longer verified, and an exporter whose manifest's key was taken
        retried for good while the spool filled (found by a review helper)."""
        store = self.spool.store
        name = self.config.name
        if self.notary is None or store.intent(name) is not None:
            return
        if store.has_begun(name, destination):
            return
        there = self._still_there(store.destination_log(destination))
        watermark = store.watermark(name)
        if there is not None and there.last_seq > watermark:
            wanted = set(self.config.log_types) or {t for t in LOG_DIRS if t}
            left_out = sorted(wanted - there.log_types) if there.log_types else []
            if left_out:
                # Its log there left out events this exporter writes: those up to the
                # log's end are not at this destination. Said, as the log must go on
                # (cut again, its batches would contradict the ones there).
                log.warning(
                    "exporter %s goes on with the log at %s after event %d: its events "
                    "%d..%d of log types %s are not there (the log left them out)",
                    name,
                    getattr(self.writer, "location", "its destination"),
                    there.last_seq,
                    watermark + 1,
                    there.last_seq,
                    ", ".join(LOG_DIRS.get(t, str(t)) for t in left_out),
                )
            store.commit_files(
                name, [], watermark=there.last_seq, since=watermark, destination=destination
            )

    def _still_there(self, there: DestinationLog | None) -> DestinationLog | None:
        """The log the spool remembers at this destination, if its last manifest is
        still there (when the writer can tell): a bucket emptied and made again
        under its name had the next exporter skip the spooled events and sign a
        resume after a log that was gone (found by a review helper)."""
        exists = getattr(self.writer, "exists", None)
        if there is None or exists is None or exists(there.manifest_key):
            return there
        log.warning(
            "exporter %s: the log this node wrote to %s is gone (%s is missing); "
            "a new log begins there",
            self.config.name,
            getattr(self.writer, "location", "its destination"),
            there.manifest_key,
        )
        return None

    def _publish_key(self) -> None:
        """The verifier key at the destination, locked as long as the files: put again
        while the log goes on, before its lock runs out (a day, or half the retention
        if shorter). It was put once a run: a node up for longer than the retention
        left its key deletable while the files it verifies were still locked."""
        if self.notary is None:
            return
        published_at = self._key_published_at
        if published_at is not None:
            days = self.config.retention_days
            if not days or self.clock() - published_at < min(86400.0, days * 86400.0 / 2):
                return
        published = self.notary.key_object(self.config.prefix)
        self.writer.put(published.key, published.body, **self._retention())
        self._key_published_at = self.clock()

    def _checkpoint_due(self) -> bool:
        return (
            self.notary is not None
            and not self._backlog()
            and self.clock() - self._last_checkpoint >= self.config.checkpoint_interval
        )

    def checkpoint_idle(self) -> None:
        """Sign the tree as it stands (nothing new exported): proof that it was not cut.
        Not where this exporter's log has not begun (nothing exported there yet): its
        first batch says where it begins, and a checkpoint before it would claim
        events that destination never had."""
        self._take_writer()
        notary = self.notary
        store = self.spool.store
        destination = destination_of(self.config, self.writer)
        if notary is None or not store.has_begun(self.config.name, destination):
            return
        self._publish_key()
        watermark = store.watermark(self.config.name)
        tree = store.frontier_at(watermark)
        there = store.destination_log(destination)
        manifest = notary.manifest(
            prefix=self.config.prefix,
            exporter=self.config.name,
            tree_base=store.tree.base,
            first_seq=watermark + 1,
            before=tree,
            after=tree,
            files=[],
            omitted=[],
            created_ns=time.time_ns(),
            idle=True,
            log_id=there.log_id if there is not None else None,
        )
        self.writer.put(manifest.key, manifest.body, **self._retention())
        self._last_checkpoint = self.clock()


def _log_id(notary: Notary, destination: str, first_seq: int) -> str:
    text = f"{notary.origin}\n{destination}\n{first_seq}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]
