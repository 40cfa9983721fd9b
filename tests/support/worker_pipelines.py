"""Pipelines an `AuditWorker` makes in its process (importable by name, as `spawn`
needs): a spool and a directory exporter under a directory the test chose."""

from __future__ import annotations

from pathlib import Path

from auditline.interceptor import DirectoryWriter, ExporterConfig, Pipeline, Spool


def spool_and_directory(
    root: str, durability: str = "sync", flush_interval: float = 0.2
) -> Pipeline:
    """The spool at ROOT/spool.db, exported as apievent-json files under ROOT/objects."""
    base = Path(root)
    pipeline = Pipeline(Spool(base / "spool.db", node_id="worker-test", durability=durability))
    pipeline.add_exporter(
        ExporterConfig(name="default", flush_interval=flush_interval),
        DirectoryWriter(base / "objects"),
    )
    return pipeline
