"""Each node's exporter status in the database: every replica reports its own (the
follower's round, `periodic`), and `ExporterService` shows all of them, whichever replica
answers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

import sqlalchemy as sa

from auditline.interceptor import Exporter, ExporterState, ExporterStatus
from auditline.server.db import Database, tables, upsert

__all__ = ["NodeStatus", "forget_exporter", "node_statuses", "report_statuses"]

_STATUS_FIELDS = (
    "last_error",
    "last_error_time",
    "last_success_time",
    "watermark",
    "backlog",
    "last_object_key",
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NodeStatus:
    node_id: str
    status: ExporterStatus
    reported_at: float


def report_statuses(
    db: Database, node_id: str, exporters: Mapping[str, Exporter], clock: Callable[[], float]
) -> None:
    """Write this node's status of each exporter running here."""
    now = clock()
    with db.begin() as connection:
        for exporter_id, exporter in exporters.items():
            status = exporter.status
            values = {name: getattr(status, name) for name in _STATUS_FIELDS}
            upsert(
                connection,
                tables.exporter_status,
                {
                    "exporter_id": exporter_id,
                    "node_id": node_id,
                    "state": status.state.value,
                    **values,
                    "reported_at": now,
                },
                ("exporter_id", "node_id"),
            )


def node_statuses(db: Database, exporter_ids: Iterable[str]) -> dict[str, list[NodeStatus]]:
    """Each exporter's reports, by node id."""
    table = tables.exporter_status
    found: dict[str, list[NodeStatus]] = {exporter_id: [] for exporter_id in exporter_ids}
    with db.begin() as connection:
        rows = connection.execute(
            sa.select(table)
            .where(table.c.exporter_id.in_(list(found)))
            .order_by(table.c.exporter_id, table.c.node_id)
        ).mappings()
        for row in rows:
            status = ExporterStatus(
                state=ExporterState(row["state"]), **{name: row[name] for name in _STATUS_FIELDS}
            )
            found[row["exporter_id"]].append(
                NodeStatus(node_id=row["node_id"], status=status, reported_at=row["reported_at"])
            )
    return found


def forget_exporter(db: Database, exporter_id: str) -> None:
    """The exporter is deleted: its reports go too."""
    table = tables.exporter_status
    with db.begin() as connection:
        connection.execute(table.delete().where(table.c.exporter_id == exporter_id))
