"""The FIFO transport (like OpenSIPS mi_fifo): a sans-io framer and the listener process."""

from mi_fifo.fifofile import FifoError, FifoInUse, claim_fifo, remove_fifo
from mi_fifo.framer import Framer
from mi_fifo.listener import run_listener

__all__ = ["FifoError", "FifoInUse", "Framer", "claim_fifo", "remove_fifo", "run_listener"]
