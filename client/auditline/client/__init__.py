"""The Python client of the auditline service (and the `auditline` CLI)."""
