"""The runtime: the supervisor (processes, signals, pid file, logging) and the consumers."""

from mi_server.runtime.supervisor import run_server

__all__ = ["run_server"]
