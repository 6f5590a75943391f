"""mqueue-mi: the OpenSIPS MI for the mqueue module over a shared-memory queue engine."""

__version__ = "0.1.0"
SERVER_NAME = "mqueue-mi"
