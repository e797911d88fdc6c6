"""The plugin's configuration: ``LLMConfig`` with its ``Timeouts``, ``Retry`` and ``Cassette``.

Theory of operation: one frozen attrs value per concern, so an app file reads as a sentence::

    [[plugins]]
    name = "llm"
    config = { url = "http://127.0.0.1:8080/v1", model = "qwen", timeouts = { first_token = 30 } }

The engine's converter structures it (every bad field reported at once); the validators here
check ranges. The API key is never a plain attribute that prints: ``api_key`` is left out of
the ``repr``, and the plugin keeps the key it resolves (``api_key`` or the environment
variable ``api_key_env``, by default ``OPENAI_API_KEY`` or ``ANTHROPIC_API_KEY``) in a
``Secret`` whose ``repr`` and ``str`` hide it.
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal, final

import attrs

from engine import ConfigError
from engine.plugin_spec import FloatOrInfinity

_pos = attrs.validators.gt(0.0)


@final
@attrs.frozen
class Timeouts:
    """How long a stream may wait, in seconds (``inf``: forever)."""

    connect: float = attrs.field(default=10.0, validator=_pos)
    """For the TCP (and TLS) connection."""
    first_token: FloatOrInfinity = attrs.field(default=60.0, validator=_pos)
    """From the start of an attempt to the first streamed event (headers included)."""
    between_tokens: FloatOrInfinity = attrs.field(default=30.0, validator=_pos)
    """Between two streamed events, once the stream has started; a keep-alive (an SSE
    comment, Anthropic's ``ping``) is not one. Time spent waiting for room in the agent's
    mailbox (backpressure) does not count."""
    total: FloatOrInfinity = attrs.field(default=float("inf"), validator=_pos)
    """For the whole completion, from when it has a slot: every attempt and the waits
    between them (a retry that would end after it is not made). Waiting for room in the
    agent's mailbox does not count."""


@final
@attrs.frozen
class Retry:
    """Retries of 429, 5xx and failed connections, before anything was streamed.

    The n-th retry waits ``d = min(backoff * factor ** (n - 1), max_delay)`` seconds with
    jitter (uniform in ``[d / 2, d]``), or the server's ``Retry-After`` when that is longer;
    a ``Retry-After`` over ``max_retry_after`` ends the attempts at once (``rate_limited``)."""

    attempts: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    """Requests in all (1: no retry)."""
    backoff: float = attrs.field(default=0.5, validator=attrs.validators.ge(0.0))
    factor: float = attrs.field(default=2.0, validator=attrs.validators.ge(1.0))
    max_delay: float = attrs.field(default=30.0, validator=attrs.validators.ge(0.0))
    max_retry_after: float = attrs.field(default=60.0, validator=attrs.validators.ge(0.0))
    seed: int | None = None
    """Seeds the jitter, for runs that must repeat exactly. None: from the OS, except when
    replaying a cassette, where it is 0 (a replay runs at the same times every time)."""


@final
@attrs.frozen
class Cassette:
    """Record the streams to a file, or replay them from one (see ``engine_llm.cassette``)."""

    path: str = attrs.field(validator=attrs.validators.min_len(1))
    mode: Literal["record", "replay"] = "replay"
    timing: bool = True
    """Replay with the recorded timing (on trio's clock); False: every chunk at once."""


def _url(instance: Any, attribute: Any, value: str) -> None:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"url must start with http:// or https://, not {value[:40]!r}")


@final
@attrs.frozen
class LLMConfig:
    """The configuration of ``LLM`` (the ``Config`` of its entry point)."""

    url: str = attrs.field(default="http://127.0.0.1:8000/v1", validator=_url)
    """The API's base URL; requests go to ``<url>/chat/completions`` or ``<url>/messages``."""
    api: Literal["openai", "anthropic"] = "openai"
    """The streaming format: OpenAI-compatible chat completions, or Anthropic messages."""
    model: str = "default"
    """The model of requests that name none."""
    max_tokens: int = attrs.field(default=1024, validator=attrs.validators.ge(1))
    """The ``max_tokens`` of requests that give none."""
    api_key: str | None = attrs.field(default=None, repr=False)
    """The key; None: read ``api_key_env``. Sent as ``Authorization: Bearer`` (openai) or
    ``x-api-key`` (anthropic), never logged, never recorded."""
    api_key_env: str | None = None
    """The environment variable holding the key; None: ``OPENAI_API_KEY`` or
    ``ANTHROPIC_API_KEY``, by ``api``. No key at all is fine for local servers."""
    anthropic_version: str = "2023-06-01"
    tag: str = attrs.field(default="llm", validator=attrs.validators.min_len(1))
    """The first item of the outputs that ask for a stream: ``(tag, request)``."""
    max_streams: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    """Streams open at once; more wait their turn (the first-token clock starts after)."""
    max_event: int = attrs.field(default=1 << 20, validator=attrs.validators.ge(1024))
    """Bytes of one streamed event (and of an error body read); more is ``too_large``."""
    max_message: int = attrs.field(default=8 << 20, validator=attrs.validators.ge(1))
    """Characters of one message's text and tool-call arguments together; more is
    ``too_large`` (a server that never stops is not kept whole)."""
    timeouts: Timeouts = attrs.Factory(Timeouts)
    retry: Retry = attrs.Factory(Retry)
    cassette: Cassette | None = None

    def resolve_key(self) -> Secret:
        """The key from the config or the environment (possibly none), without the
        whitespace around it (a key pasted with its newline).

        Raises:
            ConfigError: The key holds a control character or one that is not ASCII: it
                cannot go in a header. The error says where the key came from and where
                the character is, never the key.
        """
        raw: str | None
        if self.api_key is not None:
            raw, where = self.api_key, "api_key"
        else:
            name = self.api_key_env or (
                "ANTHROPIC_API_KEY" if self.api == "anthropic" else "OPENAI_API_KEY"
            )
            raw, where = os.environ.get(name), f"api_key (from the environment variable {name})"
        key = (raw or "").strip()
        for i, c in enumerate(key):
            if not " " <= c <= "~":
                what = "a control character" if c.isascii() else "a character that is not ASCII"
                problem = f"{where}: {what} at position {i} cannot go in a header"
                raise ConfigError("the engine-llm API key", [problem + " (the key is not shown)"])
        return Secret(key or None)


@final
class Secret:
    """A key that does not print: ``repr`` and ``str`` say ``Secret(***)``; ``redact`` takes
    it out of any text that is about to leave the plugin (an error body may echo it), in
    each form it may take there: as it is, escaped as in a ``repr`` or a JSON string."""

    __slots__ = ("_bforms", "_first", "_forms", "_value")

    def __init__(self, value: str | None) -> None:
        self._value = value
        forms = set()
        if value:
            forms = {value, repr(value)[1:-1], json.dumps(value)[1:-1], repr(value.encode())[2:-1]}
        self._forms = tuple(sorted(forms, key=len, reverse=True))
        """The key's forms, longest first."""
        self._bforms = tuple(form.encode() for form in self._forms)
        self._first = frozenset(
            b[-1] for f in self._bforms for b in (f[:k] for k in range(1, len(f)))
        )
        """The bytes a key's start may end with (one test tells most chunks apart)."""

    def __repr__(self) -> str:
        return "Secret(***)" if self._value else "Secret(None)"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def reveal(self) -> str | None:
        """The key, for the one place that sends it (the request's headers)."""
        return self._value

    def redact(self, text: str) -> str:
        """``text`` without the key (each of its forms becomes ``[redacted]``)."""
        for form in self._forms:
            if form in text:
                text = text.replace(form, "[redacted]")
        return text

    def cut(self, text: str, limit: int) -> str:
        """``text`` redacted, then cut to ``limit`` characters (in that order: a key that
        the cut went through would leave its start)."""
        text = self.redact(text)
        return text if len(text) <= limit else text[:limit]

    def redact_bytes(self, data: bytes) -> bytes:
        for form in self._bforms:
            if form in data:
                data = data.replace(form, b"[redacted]")
        return data

    def dangling(self, data: bytes) -> int:
        """How many bytes at the end of ``data`` could be the start of the key (0 if none):
        what a recording holds back until the next chunk tells."""
        if not data or data[-1] not in self._first:
            return 0
        best = 0
        for form in self._bforms:
            for k in range(min(len(form) - 1, len(data)), best, -1):
                if data.endswith(form[:k]):
                    best = k
                    break
        return best
