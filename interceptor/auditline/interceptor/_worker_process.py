"""The audit worker process's loop: read batches of captures, build their events, put
them in the pipeline's spool, acknowledge. `_worker` starts it and speaks to it.

A round of batches is acknowledged once its events are committed: at once for
fail-closed calls' (committed before the round ends), within the spool's commit
interval for the others. Until then the serving process keeps the batches, and sends
them again to a worker started after this one died: async events are not lost with a
worker either. (While the spool cannot write, or after `ACK_AT_THE_LATEST`, a round is
acknowledged with its async events still in this process's memory: how many, the
serving process is told, and counts lost if this worker dies: `_worker_unwritten`.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import multiprocessing
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any, Protocol

from auditline.interceptor._builder import EventBuilder
from auditline.interceptor._capture_codec import decode_record, load_schemas, pack, unpack
from auditline.interceptor._record import AuditConfig, EventIds
from auditline.interceptor._spool_freeing import SpoolFreeing
from auditline.interceptor._spool_records import QueuedDocuments
from auditline.interceptor._types import AuditUnavailableError, EventDocument, PlainStartError
from auditline.interceptor._worker_holds import DeletionHolds
from auditline.interceptor._worker_unwritten import AnsweredUnwritten
from auditline.interceptor._worker_wake import WriteWake

if TYPE_CHECKING:
    from auditline.interceptor._spool import Spool

__all__ = ["STATE_INTERVAL", "HostedPipeline", "StartedWorker", "start_worker", "worker_main"]

log = logging.getLogger("auditline.interceptor")

STATE_INTERVAL = 0.1  # seconds between looks at the spool's state while idle
ACK_AT_THE_LATEST = 1.0  # seconds after which a round is acknowledged, committed or not
UNBUILT = "an audit event could not be built"


class HostedPipeline(Protocol):
    """What an audit worker runs: a `Pipeline`, or a host holding one's spool (a
    server's, which also follows its database), closed when the worker stops.

    It may also have `notice(what: str, value: Any, at_ns: int)`: called with what the
    serving process said through `AuditWorker.notify`, before the captures of the
    calls that came after it."""

    @property
    def spool(self) -> Spool: ...

    def close(self) -> None: ...


_State = tuple[str, str, int, int, int]


def _state(spool: Spool, unwritten: AnsweredUnwritten) -> _State:
    """What the serving process follows of the spool: why it would refuse a call now,
    why it is degraded, how many events it dropped (all "" or 0 when well), the last
    loss report it has kept (`Spool.loss_reports_kept`), and how many async events
    were answered and are not written yet."""
    return (
        spool.refusal(),
        spool.degraded,
        spool.stats.dropped,
        spool.loss_reports_kept,
        unwritten.count(),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class StartedWorker:
    """A worker process whose pipeline is made, and the serving side's end of its pipe."""

    process: Any  # a multiprocessing Process (spawn context)
    conn: Connection
    state: _State  # its spool's first `_state`


def start_worker(
    pipeline_factory: Callable[[], HostedPipeline],
    config: AuditConfig,
    schema_files: list[bytes],
    *,
    timeout: float,
    again: bool = False,
) -> StartedWorker:
    """Start a worker process and wait until it is ready (its pipeline made: a spool
    that cannot open fails the start); raise `RuntimeError` otherwise. `again`: one
    that died is replaced, and will be resent what it did not acknowledge."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe(duplex=True)
    process = context.Process(
        target=worker_main,
        args=(child, pipeline_factory, config, schema_files, again),
        name="auditline-audit-worker",
        daemon=True,
    )
    process.start()
    child.close()
    if not parent.poll(timeout):
        process.kill()
        raise RuntimeError("the audit worker did not start in time")
    try:
        hello = unpack(parent.recv_bytes())
    except EOFError:
        raise RuntimeError("the audit worker exited while starting") from None
    if hello[0] != "ready":
        process.kill()
        raise RuntimeError(f"the audit worker could not start: {hello[1]}")
    return StartedWorker(process=process, conn=parent, state=tuple(hello[1:]))


def _why(exc: Exception) -> str:
    """Why the pipeline could not be made, for the serving process's log: the error's
    type, and a file error's reason and file; not any message (a connection's may
    quote its URL, credentials and all)."""
    if isinstance(exc, PlainStartError):  # its message quotes nothing secret
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{type(exc).__name__}: {exc.strerror}{where}"
    return type(exc).__name__


def worker_main(
    conn: Connection,
    pipeline_factory: Callable[[], HostedPipeline],
    config: AuditConfig,
    schema_files: list[bytes],
    again: bool = False,
) -> None:
    # Ctrl-C reaches the whole process group: the serving process decides when this
    # one stops (after the last events), not the signal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Started again: what the dead worker committed but did not acknowledge is resent,
    # and recognised by its ids only while the spool keeps it: the spool the factory
    # opens deletes nothing until the resent batches are taken.
    SpoolFreeing.hold_at_open = again
    try:
        load_schemas(schema_files)
        pipeline = pipeline_factory()
    except Exception as exc:
        conn.send_bytes(pack(("failed", _why(exc))))
        return
    finally:
        SpoolFreeing.hold_at_open = False
    spool = pipeline.spool
    unwritten = AnsweredUnwritten()
    state = _state(spool, unwritten)
    conn.send_bytes(pack(("ready", *state)))
    worker = _Worker(spool, EventBuilder(config), getattr(pipeline, "notice", None))
    rounds: list[_Round] = []  # taken, not yet acknowledged
    holds = DeletionHolds(spool.store, held_at_open=spool.store.keep_after)
    woken = WriteWake()
    spool.on_written = woken.written
    try:
        while True:
            timeout = STATE_INTERVAL
            if rounds:  # until the oldest may wait no longer, unless a write comes first
                timeout = max(rounds[0].at + ACK_AT_THE_LATEST - time.monotonic(), 0) + 0.001
            ready = wait([conn, woken.fd], timeout)
            if woken.fd in ready:
                woken.drain()
            if conn not in ready:
                if rounds:
                    rounds, state = _acknowledge(conn, spool, rounds, state, unwritten)
                    woken.waiting = bool(rounds)
                    holds.settled((round_.after_seq for round_ in rounds), resent_all=False)
                    continue
                # Idle: tell the serving process when the spool's state changed (room
                # again after a full disk), which it would otherwise learn only with
                # the next acknowledgement.
                current = _state(spool, unwritten)
                if current != state:
                    state = current
                    conn.send_bytes(pack(("state", *state)))
                continue
            # Every batch already waiting is taken together: the fail-closed calls of
            # them all share one commit (calls in flight at once arrive together).
            batches, resent_all, quitting = _arrived(conn)
            if batches:
                numbered = spool.store.last_seq  # the round's new events come after it
                holds.taking(numbered)
                error, queued = worker.take(batches)
                # Its events the dead worker had committed are held with it, in case
                # this worker dies too before answering and they are resent again.
                if worker.oldest_known is not None:
                    numbered = min(numbered, worker.oldest_known - 1)
                ids = tuple(batch_id for batch_id, _, _ in batches)
                rounds.append(
                    _Round(
                        ids=ids,
                        error=error,
                        queued=queued,
                        at=time.monotonic(),
                        after_seq=numbered,
                    )
                )
                # Before the look: a write after it wakes the loop.
                woken.waiting = True
                rounds, state = _acknowledge(conn, spool, rounds, state, unwritten)
                woken.waiting = bool(rounds)
            holds.settled((round_.after_seq for round_ in rounds), resent_all=resent_all)
            if quitting:
                break
    finally:
        try:
            pipeline.close()
        finally:
            spool.on_written = lambda: None
            woken.close()
    with contextlib.suppress(OSError):
        # What came after the last flush is committed by the close: answered before
        # the quit (the serving process reads until then).
        _answer(conn, rounds, state)
        conn.send_bytes(pack(("quit",)))


_Batches = list[tuple[int, bool, list[tuple[Any, ...]]]]  # (batch id, resent, items)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Round:
    """Batches taken together, and how their answer stands."""

    ids: tuple[int, ...]
    error: str  # "" or why their fail-closed calls' events could not be kept
    queued: QueuedDocuments  # their async events: how many, whether committed
    at: float  # when they were taken (monotonic)
    after_seq: int  # the spool's last event before them: theirs are numbered after it


def _acknowledge(
    conn: Connection,
    spool: Spool,
    rounds: list[_Round],
    state: _State,
    unwritten: AnsweredUnwritten,
) -> tuple[list[_Round], _State]:
    """Answer the rounds, oldest first, whose events are committed (or that may wait
    no longer): the rounds left, and the spool's state as last sent (`state` if no
    answer went)."""
    now = time.monotonic()
    done = 0
    for round_ in rounds:
        if not (round_.queued.committed() or spool.degraded or now - round_.at > ACK_AT_THE_LATEST):
            break
        done += 1
    if done:
        for round_ in rounds[:done]:
            unwritten.answered(round_.queued)
        state = _state(spool, unwritten)
        _answer(conn, rounds[:done], state)
    return rounds[done:], state


def _answer(conn: Connection, rounds: list[_Round], state: _State) -> None:
    """Rounds of one answer go in one message: one wake-up of the serving process's
    reading thread, however many had piled up."""
    for error, same in itertools.groupby(rounds, key=lambda r: r.error):
        ids = tuple(batch_id for round_ in same for batch_id in round_.ids)
        conn.send_bytes(pack(("ack", ids, error, *state)))


def _arrived(conn: Connection, most: int = 64) -> tuple[_Batches, bool, bool]:
    """The batches waiting in the pipe (at least one message is), whether the serving
    process said every resent batch is among them or before them, and whether it said
    to quit or is gone (then what arrived is still kept)."""
    batches: _Batches = []
    resent_all = False
    while True:
        try:
            message = unpack(conn.recv_bytes())
        except EOFError:
            return batches, resent_all, True  # the serving process is gone
        if message[0] == "quit":
            return batches, resent_all, True
        if message[0] == "resent":
            resent_all = True
        else:
            _, batch_id, resent, items = message
            batches.append((batch_id, resent, items))
        if len(batches) >= most or not conn.poll(0):
            return batches, resent_all, False


class _Worker:
    def __init__(
        self, spool: Spool, builder: EventBuilder, notice: Callable[[str, Any, int], None] | None
    ) -> None:
        self.spool = spool
        self.notice = notice
        self.builder = builder
        self.ids = EventIds()
        self.oldest_known: int | None = None  # of the last `take`
        self.unbuilt_waited = False  # a fail-closed call's capture of it not built

    def _known(self, event_id: str) -> bool:
        """Committed by the worker that died before acknowledging it (the oldest such
        of a `take` is `oldest_known`). An event with no id is never taken for one."""
        seq = self.spool.store.seq_kept(event_id) if event_id else None
        if seq is None:
            return False
        self.oldest_known = seq if self.oldest_known is None else min(self.oldest_known, seq)
        return True

    def take(self, batches: _Batches) -> tuple[str, QueuedDocuments]:
        """Build and spool the batches' events: "" or why those of their fail-closed
        calls could not be kept, and whether the others are committed yet.

        The fail-closed calls' events are committed together, all or none, before this
        returns; the others are queued, and dropped and counted if there is no room
        (never refused: their calls were answered already)."""
        waited: list[EventDocument] = []
        queued: list[EventDocument] = []
        flush = False
        self.oldest_known, self.unbuilt_waited = None, False
        for _, resent, items in batches:
            flush |= self._build(items, resent=resent, waited=waited, queued=queued)
        # The others first: in the same batch as the fail-closed calls' events, they are
        # committed with them, and the round is answered at once (queued after, they
        # waited for the next commit, and the fail-closed calls with them).
        queued_now = self.spool.queue_documents(queued)
        error = ""
        if self.unbuilt_waited:
            # Refused together, as when the spool cannot keep them (committed, the
            # others' events would say OK while their calls were refused).
            error = UNBUILT
        elif waited:
            try:
                self.spool.emit_documents(waited, wait=True)
            except AuditUnavailableError as exc:
                error = str(exc) or "the audit log cannot record this call"
        if flush and not self._flushed():
            return error or "the spool could not commit in time", queued_now
        return error, queued_now

    def _flushed(self) -> bool:
        """Wait until the spool committed everything queued, unless it cannot write (a
        full disk): then answer at once. Waiting on, the loop would answer nothing,
        be taken for hung and killed, with the events it holds in memory."""
        while not self.spool.flush(timeout=1.0):
            if self.spool.degraded:
                return False
        return True

    def _build(
        self,
        items: list[tuple[Any, ...]],
        *,
        resent: bool,
        waited: list[EventDocument],
        queued: list[EventDocument],
    ) -> bool:
        """Add a batch's events to those to commit (`waited`) or queue; True when it
        asks for a flush."""
        flush = False
        for item in items:
            kind = item[0]
            if kind == "capture":
                try:
                    record, event_id = decode_record(item[1])
                    if resent and self._known(event_id):
                        continue
                    made = self.builder.documents(record, event_id=event_id, next_id=self.ids.next)
                except Exception as exc:
                    # A bug, as in-process it costs one counted event: raised, it
                    # killed the worker, which was sent the capture again and died
                    # again, until it was given up and every call refused.
                    log.error("%s: %s (counted lost)", UNBUILT, type(exc).__name__)
                    self.spool.count_lost(1, UNBUILT, time.time_ns())
                    self.unbuilt_waited |= bool(item[2])
                    continue
                (waited if item[2] else queued).extend(made)
            elif kind == "document":
                document = item[1]
                if resent and self._known(str(document.get("EventId", ""))):
                    continue
                built = EventDocument(document=document, at_ns=item[2], end_ns=item[3])
                (waited if item[4] else queued).append(built)
            elif kind == "lost":  # events the serving process could not hand over
                self.spool.count_lost(item[1], item[2], item[3], report=item[4])
            elif kind == "schemas":
                load_schemas(item[1])
            elif kind == "notice" and self.notice is not None:
                try:
                    self.notice(item[1], item[2], item[3])
                except Exception:
                    # Its bug, or its database gone for a moment: the events still go
                    # on (a crash would be resent the same notice, and crash again).
                    log.exception("the audit worker's pipeline could not follow a notice")
            elif kind == "flush":
                flush = True
        return flush
