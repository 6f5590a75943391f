"""The JSON-RPC error codes, messages and detail strings of OpenSIPS 3.6 (mi/mi.h, mi/item.c).

Kept in one place so the wire text is spelled once; commands raise `param_error` for a
parameter of the wrong type, exactly like OpenSIPS's `init_mi_param_error()`.
"""

from __future__ import annotations

from jsonrpcserver.exceptions import JsonRpcError

PARSE_ERROR = (-32700, "Parse error")
INVALID_REQUEST = (-32600, "Invalid Request")  # capital R: jsonrpcserver writes "request"
METHOD_NOT_FOUND = (-32601, "Method not found")
INVALID_PARAMS = (-32602, "Invalid params")
SERVER_ERROR = (-32000, "Server error")
# Ours: any command while the queue engine's store (Redis) cannot be reached.  500 is
# what OpenSIPS answers for a failure on its side that the request did not cause ("Out of
# memory", "Internal error"): the client may retry the same request later.
ENGINE_UNAVAILABLE = (500, "Queue engine unavailable")

DET_NO_PARAMS = "Too few or too many parameters"
DET_AMBIGUOUS = "Ambiguous call, use named parameters instead"
DET_MATCH_PARAMS = "Named parameters do not match"
DET_CMD_NULL = "Command handler returned null"


def bad_type(name: str) -> JsonRpcError:
    """-32602 for a parameter of the wrong JSON type (or, for integers, bad text)."""
    return JsonRpcError(INVALID_PARAMS[0], INVALID_PARAMS[1], f"Bad type for parameter '{name}'")


def bad_array_item(name: str) -> JsonRpcError:
    return JsonRpcError(
        INVALID_PARAMS[0], INVALID_PARAMS[1], f"Bad type for array item in parameter '{name}'"
    )


def empty_array(name: str) -> JsonRpcError:
    return JsonRpcError(INVALID_PARAMS[0], INVALID_PARAMS[1], f"Empty array in parameter '{name}'")
