"""Constrained decoding: an OpenAI `response_format` turned into a JSON Schema, compiled for the
engine's tokenizer (xgrammar), and the per-row masks that keep each constrained row's next token
inside its grammar.

Rows without a grammar are never touched. Compiling happens when a request is submitted, so a
schema the compiler refuses is a 400 before any answer starts, never a hang in the decode loop.
xgrammar is imported only inside the functions that need it (it is behind the `train` extra).
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from ..errors import BadRequest

# `json_object` asks for any JSON object: this schema, compiled like any other.
ANY_OBJECT = '{"type": "object"}'
# Whitespace between JSON tokens is free, but at most this many characters in one place: a weak
# model could otherwise spend its whole max_tokens on spaces and newlines.
MAX_WHITESPACE = 4
COMPILER_CACHE_BYTES = 64 * 1024 * 1024


def response_schema(response_format: dict[str, Any] | None) -> str | None:
    """The JSON Schema (as text) that `response_format` asks the answer to follow, or None for
    free text. Malformed shapes are a 400 naming `response_format`."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return ANY_OBJECT
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if schema is None:
            return ANY_OBJECT  # OpenAI's schema is optional: then any object will do
        if not isinstance(schema, dict):
            raise BadRequest(
                "response_format.json_schema.schema must be a JSON Schema object",
                param="response_format",
                code="invalid_value",
            )
        # Written in the schema's own key order: a grammar keeps the properties in the order
        # the schema lists them, the order the teacher answered in and the student learnt (one
        # text per schema as sent: the compiler caches on it)
        return json.dumps(schema)
    raise BadRequest(
        f"response_format type '{kind}' is not supported: use text, json_object or json_schema",
        param="response_format",
        code="unsupported_value",
    )


_CPP_PREFIX = re.compile(r"^\[[\d:]+\]\s+\S+:\d+:\s*")


def _reason(err: Exception) -> str:
    """The compiler's message without its C++ source location."""
    lines = [_CPP_PREFIX.sub("", line).strip() for line in str(err).splitlines()]
    return "; ".join(line for line in lines if line) or type(err).__name__


class Grammars:
    """One engine's grammar compiler (built on first use: ~0.2 s for a 49k vocabulary) and its
    cache of compiled schemas. Safe to call from any thread."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: set[int]) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.stop_ids = sorted(stop_ids)
        self._compiler: Any = None
        self._lock = threading.Lock()

    def _get_compiler(self) -> Any:
        with self._lock:
            if self._compiler is None:
                import xgrammar

                info = xgrammar.TokenizerInfo.from_huggingface(
                    self.tokenizer, vocab_size=self.vocab_size, stop_token_ids=self.stop_ids
                )
                self._compiler = xgrammar.GrammarCompiler(
                    info, max_threads=1, cache_limit_bytes=COMPILER_CACHE_BYTES
                )
            return self._compiler

    def compile(self, schema: str) -> Any:
        """The compiled grammar of `schema`; a schema the compiler refuses is a BadRequest with
        its reason."""
        compiler = self._get_compiler()
        try:
            return compiler.compile_json_schema(
                schema, any_whitespace=True, max_whitespace_cnt=MAX_WHITESPACE
            )
        except Exception as err:  # xgrammar raises RuntimeError (C++), ValueError, TypeError
            raise BadRequest(
                f"response_format: the JSON Schema cannot be compiled: {_reason(err)}",
                param="response_format",
                code="invalid_schema",
            ) from err


def matcher(compiled: Any) -> Any:
    """A fresh matcher (one row's position in its grammar)."""
    import xgrammar

    return xgrammar.GrammarMatcher(compiled)


def mask_rows(logits: Any, matchers: list[Any]) -> Any:
    """`logits` with every token the row's matcher forbids set to -inf (rows whose matcher is None
    unchanged); a copy when any row is constrained, else `logits` itself."""
    rows = [i for i, m in enumerate(matchers) if m is not None]
    if not rows:
        return logits
    import xgrammar

    masked = logits.clone()
    bitmask = xgrammar.allocate_token_bitmask(len(matchers), masked.shape[-1])
    for row in rows:
        matchers[row].fill_next_token_bitmask(bitmask, row)
    xgrammar.apply_token_bitmask_inplace(masked, bitmask, indices=rows)
    return masked


def advance(match: Any, token: int) -> None:
    """Move the matcher past `token`; the token was chosen under its mask, so a refusal is a bug."""
    if not match.accept_token(token):
        raise RuntimeError(f"the grammar refused token {token} that its own mask allowed")
