"""The storage layer's own exception."""


class StorageError(Exception):
    """A database or fallback-file problem, with a message naming the table or file."""
