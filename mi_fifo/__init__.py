"""The FIFO transport (like OpenSIPS mi_fifo): a sans-io framer and the listener process."""

from mi_fifo.framer import Framer
from mi_fifo.listener import FifoError, create_fifo, remove_fifo, run_listener

__all__ = ["FifoError", "Framer", "create_fifo", "remove_fifo", "run_listener"]
