"""The auditline account service and `auditline serve`."""

from auditline.server.app import SERVICES, AuditlineServer, ServiceRegistration
from auditline.server.config import ConfigError, Settings
from auditline.server.serve import run

__all__ = ["SERVICES", "AuditlineServer", "ConfigError", "ServiceRegistration", "Settings", "run"]
