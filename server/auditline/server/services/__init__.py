"""The servicers of the account API, one module per service."""
