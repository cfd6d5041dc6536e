"""What the gateway reads from a checked request (stillhouse.openai.protocol): where the task and
the session come from, which metadata is ours, and the body forwarded upstream.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ..openai.protocol import ChatCompletionRequest

TASK_HEADER = "x-stillhouse-task"
SESSION_HEADER = "x-stillhouse-session"
# metadata keys that are ours: read by the gateway, not forwarded upstream
OWN_METADATA = ("task", "session_id")
# metadata keys the gateway itself writes on a stored call (the candidate that answered, the call
# a fallback or shadow answer belongs to, ...). The rollout gate and curation trust them, so a
# caller's values never land there: they are kept under `metadata.client` instead.
RESERVED_METADATA = frozenset(
    {
        "candidate",
        "fallback_of",
        "shadow_of",
        "usage_estimated",
        "routed_intent",
        "response",
        "client",
    }
)


def call_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """The metadata to store with a call: the caller's, with any value of a key the gateway
    reserves (RESERVED_METADATA) moved under `client`, so a caller cannot pose as a candidate's
    answer (and poison its rollout gate) or as a fallback."""
    out = dict(metadata or {})
    moved = {k: out.pop(k) for k in sorted(RESERVED_METADATA & out.keys())}
    if moved:
        out["client"] = moved
    return out


def header_value(text: str) -> str:
    """`text` fit for a response header: printable ASCII as it is, anything else (non-latin-1
    characters, CR/LF, other controls) percent-encoded as UTF-8. A header the server cannot
    encode was a 500, and a CR/LF one a dropped connection, after the upstream had answered."""
    if text.isascii() and text.isprintable():
        return text
    return quote(text, safe=" !\"#$&'()*+,/:;<=>?@[\\]^_`{|}~")


def task_of(request: ChatCompletionRequest, headers: Any) -> str:
    """Header X-Stillhouse-Task, else metadata.task, else `model`."""
    header = headers.get(TASK_HEADER)
    if header:
        return str(header)
    meta_task = (request.metadata or {}).get("task")
    return str(meta_task) if meta_task else request.model


def session_of(request: ChatCompletionRequest, headers: Any) -> str | None:
    """Header X-Stillhouse-Session, else metadata.session_id, else `user`."""
    header = headers.get(SESSION_HEADER)
    if header:
        return str(header)
    meta_session = (request.metadata or {}).get("session_id")
    if meta_session:
        return str(meta_session)
    return request.user


def upstream_body(body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
    """The request to forward: the upstream's model name, our metadata keys removed."""
    out = dict(body)
    out["model"] = upstream_model
    meta = out.get("metadata")
    if isinstance(meta, dict) and any(k in meta for k in OWN_METADATA):
        rest = {k: v for k, v in meta.items() if k not in OWN_METADATA}
        if rest:
            out["metadata"] = rest
        else:
            del out["metadata"]
    return out
