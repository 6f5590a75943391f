"""The shared-memory engine (docs/ARCHITECTURE.md section 2): queues in one mmap'ed file
under /dev/shm.  arena.py (Arena: the queue operations, hot paths inline) stands on
lifecycle.py (the file: create, attach, close, the owner lock), alloc.py (item blocks),
undo.py (the undo log and rollback), compact.py (free-space compaction), lock.py (the
arena lock), layout.py (the header and records), memory.py (memory statistics),
invariants.py (the consistency check), survivor.py (finding a dead server's arena) and
speedups.py with _speedups.c (its optional compiled part)."""
