"""`WorkerLink`: the audit worker's process and the pipe to it, seen from the serving
process. It starts the process, writes batches to it and reads its replies, kills it
when it hangs, starts it again (resending every batch it had not acknowledged) and,
past its restart budget, gives it up.

`AuditWorker` decides what goes into a batch and what the replies mean; this module
only keeps a worker there to take them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from auditline.interceptor._capture_codec import pack, unpack
from auditline.interceptor._record import AuditConfig
from auditline.interceptor._worker_outbox import EVENT_KINDS, Batch
from auditline.interceptor._worker_process import HostedPipeline, start_worker

__all__ = ["LinkHooks", "Supervision", "WorkerLink"]

log = logging.getLogger("auditline.interceptor")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Supervision:
    """How the worker is kept alive (`AuditWorker`'s arguments of the same names)."""

    max_restarts: int
    restart_window: float
    start_timeout: float
    ack_timeout: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class LinkHooks:
    """What the link asks of `AuditWorker` (each takes the worker's lock itself)."""

    # Batches are done with ("" committed, else why not), and the state of the
    # worker's spool that came with the answer: taken together, under one lock.
    answered: Callable[[Sequence[int], str, Sequence[Any]], None]
    # The state the worker's spool reported on its own (see `_worker_process`).
    follow: Callable[[Sequence[Any]], None]
    # The worker died (before it is started again, or given up).
    died: Callable[[], None]
    # What a worker started again is sent, in order: every batch the dead one may not
    # have had, and the loss reports its spool may not have kept.
    resend: Callable[[], list[Batch]]
    # When the longest-unanswered batch was written (monotonic), if any was.
    oldest_sent_at: Callable[[], float | None]
    # The proto files every worker needs, in the order they were first sent.
    schema_files: Callable[[], list[bytes]]
    # Whether the worker is being closed (its end is then no reason to restart it).
    closing: Callable[[], bool]
    # No worker will take batches any more, and why.
    given_up: Callable[[str], None]
    # A batch that could not be encoded (a bug): its events are not sent.
    unencodable: Callable[[Batch], None]


class WorkerLink:
    """The serving side's end of one audit worker: the process (started again as
    `supervision` allows) and the pipe to it. `receive` is its reading thread's loop."""

    def __init__(
        self,
        factory: Callable[[], HostedPipeline],
        supervision: Supervision,
        hooks: LinkHooks,
    ) -> None:
        self.supervision = supervision
        self.restarts = 0  # how many times the worker was started again
        self._factory = factory
        self._hooks = hooks
        self._config: AuditConfig | None = None
        self._restart_times: list[float] = []
        self._process: Any = None
        self._conn: Connection | None = None
        # Held while a batch is registered as sent and written, and while a new worker
        # is sent the unacknowledged ones: each batch reaches a worker once.
        self._send_lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self._conn is not None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, config: AuditConfig) -> None:
        """Start the worker process and wait until its pipeline is made."""
        self._config = config
        self._spawn()

    def _spawn(self, *, again: bool = False) -> None:
        assert self._config is not None
        started = start_worker(
            self._factory,
            self._config,
            self._hooks.schema_files(),
            timeout=self.supervision.start_timeout,
            again=again,
        )
        self._process, self._conn = started.process, started.conn
        self._hooks.follow(started.state)

    def send(self, batch: Batch, *, register: Callable[[], None]) -> None:
        """Write a new batch, `register`ing it as sent first (under the send lock: a
        restart resends either every batch the dead worker may have had, or this one
        is written to the new worker only, never both)."""
        with self._send_lock:
            register()
            self._write(batch, resent=False)

    def _write(self, batch: Batch, *, resent: bool) -> None:
        """Send a batch (holding the send lock)."""
        try:
            message = pack(("batch", batch.batch_id, resent, batch.items))
        except ValueError:
            # A bug (a value the codec let through); the batch's calls are answered
            # UNAVAILABLE in fail-closed mode rather than hang, and the bug is logged.
            log.exception("an audit batch could not be encoded")
            self._hooks.unencodable(batch)
            # The rest still goes, in its turn: proto files the worker is taken to
            # have, notices, and loss reports (a later report counted first would make
            # the worker take these for counted already).
            rest = [item for item in batch.items if item[0] not in EVENT_KINDS]
            if not rest:
                return
            try:
                message = pack(("batch", batch.batch_id, resent, rest))
            except ValueError:  # a notice's value: the loss reports go at least
                lost = [item for item in rest if item[0] == "lost"]
                message = pack(("batch", batch.batch_id, resent, lost))
        batch.sent_at = time.monotonic()
        try:
            assert self._conn is not None
            self._conn.send_bytes(message)
        except OSError:
            pass  # the worker is gone: the receiving thread restarts it and resends

    def quit(self, timeout: float) -> None:
        """Ask the worker to close its pipeline and exit; kill it if it does not."""
        try:
            with self._send_lock:
                assert self._conn is not None
                self._conn.send_bytes(pack(("quit",)))
        except OSError:
            pass
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)

    def receive(self) -> None:
        """Read the worker's replies until it quits or is given up (a thread's loop)."""
        while True:
            conn = self._conn
            assert conn is not None
            try:
                if not conn.poll(min(1.0, self.supervision.ack_timeout / 4)):
                    self._watch()
                    continue
                reply = unpack(conn.recv_bytes())
            except (EOFError, OSError):
                if self._hooks.closing():
                    return
                if not self._restart():
                    return
                continue
            if reply[0] == "quit":
                return
            if reply[0] == "state":
                self._hooks.follow(reply[1:])
                continue
            _, batch_ids, error, *state = reply
            self._hooks.answered(batch_ids, error, state)

    def _watch(self) -> None:
        """Kill a worker that left a batch unanswered for `ack_timeout`: it is hung
        (its process lives, so nothing else would notice). Its end starts a new one."""
        oldest = self._hooks.oldest_sent_at()
        timeout = self.supervision.ack_timeout
        if oldest is not None and time.monotonic() - oldest > timeout:
            log.error("the audit worker has not answered for %.0fs; stopping it", timeout)
            self._process.kill()

    def _restart(self) -> bool:
        """Start a new worker and send it every unacknowledged batch; False when the
        worker is given up."""
        self._hooks.died()
        now = time.monotonic()
        window = self.supervision.restart_window
        self._restart_times = [t for t in self._restart_times if t > now - window]
        exit_code = None
        if self._process is not None:
            self._process.join(1)  # its pipe closed first: reaped, it has a code to say
            exit_code = self._process.exitcode
        if len(self._restart_times) >= self.supervision.max_restarts:
            self._give_up(f"the audit worker died {len(self._restart_times) + 1} times")
            return False
        self._restart_times.append(now)
        log.error("the audit worker exited (code %s); starting it again", exit_code)
        with self._send_lock:
            try:
                self._spawn(again=True)
            except Exception as exc:
                # Why, in the log only: the calls refused from now on are told no more.
                log.error("the audit worker could not be started again: %s", exc)
                self._give_up("the audit worker could not be started again")
                return False
            self.restarts += 1
            for batch in self._hooks.resend():
                self._write(batch, resent=True)
            # Until then the new worker's spool deletes nothing: what it recognises
            # of them by their ids must still be there.
            assert self._conn is not None
            with contextlib.suppress(OSError):  # gone again: the next restart resends
                self._conn.send_bytes(pack(("resent",)))
        return True

    def _give_up(self, reason: str) -> None:
        log.error("%s: calls are refused and events counted as lost", reason)
        self._hooks.given_up(reason)
