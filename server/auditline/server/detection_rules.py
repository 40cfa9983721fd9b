"""The detection rules auditline ships: Sigma rules over its OCSF records (the
`detections/` folder of this package; its README says how they are checked)."""

from __future__ import annotations

from importlib import resources

__all__ = ["FINDING_EVENT", "shipped_rules_text"]

# The event each match of a rule becomes (in the findings log).
FINDING_EVENT = "DetectionFinding"


def shipped_rules_text() -> str:
    """Every shipped rule, as one multi-document YAML text (the form pySigma reads)."""
    folder = resources.files("auditline.server") / "detections"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".yml")), key=lambda f: f.name)
    return "\n---\n".join(f.read_text(encoding="utf-8").strip() for f in files) + "\n"
