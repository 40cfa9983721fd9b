"""Running Sigma detection rules over audit events: compiled with pySigma's SQLite
backend, evaluated over the events' OCSF records in an in-memory SQLite table (one
column per dotted OCSF path, as the backend's queries name them).

`auditline detect` runs the shipped rules (and an operator's own) over exported files,
for back-testing. Correlations are evaluated by `detection_correlation` from each
record's `time`; a rule that names `timestamp` gets it as ISO 8601.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from sigma.backends.sqlite.sqlite import sqliteBackend
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule

from auditline.interceptor._types import PlainStartError
from auditline.server.detection_correlation import Correlation, CorrelationState
from auditline.server.detection_rules import shipped_rules_text

__all__ = ["Detection", "DetectionError", "DetectionWindow", "Detector", "rules_text"]


class DetectionError(PlainStartError, ValueError):
    """A rule that cannot be read or compiled: said at once, never silently skipped
    (its message, the rule's problem, comes whole from an audit worker too)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Detection:
    """A rule's match: the rule, and the events that make it (by event id)."""

    rule_id: str
    title: str
    level: str
    event_ids: tuple[str, ...]


def rules_text(directories: Iterable[Path] = (), *, shipped: bool = True) -> str:
    """The shipped rules and every `.yml` rule under `directories`, as one YAML text."""
    texts = [shipped_rules_text()] if shipped else []
    for directory in directories:
        if not directory.is_dir():
            raise DetectionError(f"{directory} is not a directory of rules")
        texts += [path.read_text() for path in sorted(directory.glob("*.yml"))]
    return "\n---\n".join(t.strip() for t in texts if t.strip()) + "\n"


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        elif isinstance(value, list):
            flat[f"{prefix}{key}"] = json.dumps(value)
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _fields(rule: dict[str, Any]) -> set[str]:
    """The fields a rule's selections and correlation name: columns even when no event
    has them, so that such a rule matches nothing rather than failing."""
    selections: list[dict[str, Any]] = []
    for selection in rule.get("detection", {}).values():
        if isinstance(selection, dict):
            selections.append(selection)
        elif isinstance(selection, list):  # maps, any of which matches
            selections.extend(s for s in selection if isinstance(s, dict))
    named = {field.split("|")[0] for selection in selections for field in selection}
    correlation = rule.get("correlation", {})
    named |= set(correlation.get("group-by", []))
    if "field" in correlation.get("condition", {}):
        named.add(correlation["condition"]["field"])
    return named


class Detector:
    """Compiled rules, run over OCSF records."""

    def __init__(self, text: str) -> None:
        try:
            documents = [d for d in yaml.safe_load_all(text) if d]
            collection = SigmaCollection.from_yaml(text)
        except (yaml.YAMLError, SigmaError) as error:
            raise DetectionError(f"the rules cannot be read: {error}") from None
        if collection.errors:
            raise DetectionError(f"a rule is not valid: {collection.errors[0]}")
        self._fields = {f for d in documents for f in _fields(d)}
        backend = sqliteBackend(table="logs")  # type: ignore[no-untyped-call]
        collection.resolve_rule_references()
        self._queries: list[tuple[SigmaRule, str]] = []
        self._correlations: list[Correlation] = []
        for rule in collection.rules:
            try:
                if isinstance(rule, SigmaCorrelationRule):
                    self._correlations.append(Correlation.compile(rule, backend.convert_rule))
                    continue
                queries = backend.convert_rule(rule)  # type: ignore[no-untyped-call]
            except SigmaError as error:
                raise DetectionError(f"rule {rule.title!r} does not compile: {error}") from None
            # Empty for a correlation's base rule: it reports through it.
            for query in queries:
                head = "SELECT * FROM logs WHERE "
                if not query.startswith(head):
                    raise DetectionError(f"rule {rule.title!r}: unexpected query {query!r}")
                condition = query[len(head) :]
                # The new rows only: `rowid > ?`.
                query = f"SELECT rowid FROM logs WHERE rowid > ? AND ({condition})"  # noqa: S608
                self._queries.append((rule, query))

    @property
    def rules(self) -> int:
        return len({id(rule) for rule, _ in self._queries}) + len(self._correlations)

    def run(self, records: list[dict[str, Any]]) -> list[Detection]:
        """Every match of every rule over these OCSF records."""
        window = DetectionWindow(self)
        window.add(records)
        found = window.detect(since_rowid=0)
        window.close()
        return found


class DetectionWindow:
    """Events kept in one SQLite table as they arrive, so that each run looks at the
    new rows with the plain rules and at the whole window with the correlations (no
    rebuild per run)."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        self._columns = sorted(detector._fields | {"time", "metadata.uid"})
        names = ", ".join(f"`{c}` COLLATE NOCASE" for c in self._columns)
        # rowid never given again: `rowid > since` finds the new rows even after
        # `forget_before` emptied the table (SQLite reuses max(rowid) + 1 otherwise,
        # and a poll after a day's quiet found nothing; found by a review helper).
        self.db.execute(f"CREATE TABLE logs (_row INTEGER PRIMARY KEY AUTOINCREMENT, {names})")
        self.last_rowid = 0
        # Each correlation's groups' places from poll to poll.
        self._states: list[dict[tuple[Any, ...], CorrelationState]] = [
            {} for _ in detector._correlations
        ]

    def add(self, records: Iterable[dict[str, Any]]) -> None:
        # Only the columns the rules name: a caller's own keys (a map in a request)
        # never become columns, so no request can grow the table's shape.
        wanted = self._columns
        names = ", ".join(f"`{column}`" for column in wanted)
        insert = f"INSERT INTO logs ({names}) VALUES ({', '.join('?' * len(wanted))})"  # noqa: S608
        timestamp = "timestamp" in wanted  # named by a rule: ISO 8601, as pySigma writes it
        for record in records:
            flat = _flatten(record)
            if timestamp:
                when = datetime.datetime.fromtimestamp(flat.get("time", 0) / 1000, datetime.UTC)
                flat["timestamp"] = when.strftime("%Y-%m-%d %H:%M:%S.%f")
            cursor = self.db.execute(insert, [flat.get(column) for column in wanted])
            self.last_rowid = int(cursor.lastrowid or self.last_rowid)

    def forget_before(self, time_ms: int, *, keep_at_most: int) -> None:
        """Drop the events older than the longest correlation looks back, and beyond the
        newest `keep_at_most` (a busy node's correlations see fewer hours, not more
        CPU)."""
        self.db.execute(
            "DELETE FROM logs WHERE time < ? OR rowid <= ?",
            (time_ms, self.last_rowid - keep_at_most),
        )

    def detect(self, *, since_rowid: int) -> list[Detection]:
        """The plain rules' matches among rows after `since_rowid`, and the
        correlations' windows that end at them (each episode once)."""
        found = []
        for rule, query in self.detector._queries:
            for (rowid,) in self.db.execute(query, (since_rowid,)).fetchall():
                found.append(self._detection(rule, (int(rowid),)))
        for correlation, states in zip(self.detector._correlations, self._states, strict=True):
            for matched in correlation.matches(self.db, since_rowid=since_rowid, states=states):
                found.append(self._detection(matched.rule, matched.rowids))
        return found

    def _detection(
        self, rule: SigmaRule | SigmaCorrelationRule, rowids: tuple[int, ...]
    ) -> Detection:
        marks = ", ".join("?" * len(rowids))
        uids = dict(
            self.db.execute(
                f"SELECT rowid, `metadata.uid` FROM logs WHERE rowid IN ({marks})",  # noqa: S608
                rowids,
            ).fetchall()
        )
        return Detection(
            rule_id=str(rule.id),
            title=rule.title,
            level=rule.level.name.lower() if rule.level else "",
            event_ids=tuple(str(uids.get(r, "")) for r in rowids),
        )

    def close(self) -> None:
        self.db.close()
