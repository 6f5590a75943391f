"""Keys and values as the database holds them: the same text, except what a UTF-8 column
cannot hold.

The engine takes any JSON string, lone surrogates (U+D800..U+DFFF alone) included; MySQL's
utf8mb4 and SQLite's UTF-8 cannot store those.  Such a text is stored as ESCAPED followed
by its JSON string literal with every non-ASCII character escaped (json.dumps), which
reads back exactly.  A text that itself begins with ESCAPED is stored the same way, so
reading is never ambiguous; every other text (everything OpenSIPS itself can put in a
table) is stored as it is.
"""

from __future__ import annotations

import json

ESCAPED = "\x00mqueue-mi:json:"  # starts with NUL: no C string (OpenSIPS's view) begins so


def to_db(text: str) -> str:
    """`text` as the database stores it."""
    if text.startswith(ESCAPED):
        return ESCAPED + json.dumps(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return ESCAPED + json.dumps(text)
    return text


def from_db(text: str) -> str:
    """The text to_db stored as `text`."""
    if text.startswith(ESCAPED):
        return json.loads(text[len(ESCAPED):])
    return text
