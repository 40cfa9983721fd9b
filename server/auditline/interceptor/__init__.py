"""The embeddable audit interceptor and export pipeline (see the interceptor issue).

It must never import `auditline.server`: other services embed it alone.
"""

__all__: list[str] = []
