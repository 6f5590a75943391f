"""The text form of a compat transcript case shown in docs/commands.md and docs/wire.md:
its `queue:` and `item:` lines, then each request (`>>>`) and its reply (`<<<`, or
`<<< (no reply)` for a notification), exactly as compat/README.md writes them."""

from __future__ import annotations

import json

from compat.transcripts import Case


def render(case: Case) -> str:
    lines = [f"queue: {json.dumps(queue)}" for queue in case.queues]
    lines += [f"item: {json.dumps(list(item), ensure_ascii=False)}" for item in case.items]
    for step in case.steps:
        request = step.request.decode("utf-8")
        if any(ord(c) < 0x20 for c in request):
            raise ValueError(f"{case.name}: a raw control byte cannot be shown as text")
        lines.append(f">>> {request}")
        if step.reply_pattern is not None:
            raise ValueError(f"{case.name}: a reply pattern has no fixed text to show")
        lines.append("<<< (no reply)" if step.reply is None
                     else f"<<< {step.reply.decode('utf-8')}")
    return "".join(f"{line}\n" for line in lines)
