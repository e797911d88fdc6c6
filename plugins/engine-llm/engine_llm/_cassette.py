"""Cassettes: streams recorded from a live server, replayed offline with the same timing.

Theory of operation: this module is the file format (``Interaction``, ``CassetteWriter``,
``load``); ``_transports`` records and replays through httpx transports, so the rest of the
plugin runs the same code live, recording and replaying. One *interaction* is one request
and what came back.

A cassette is JSON Lines. The first line is ``{"format": "engine-llm-cassette", "version":
1}``; then, per interaction ``n``, in order::

    {"n": 0, "type": "request", "method": "POST", "endpoint": "chat/completions", "body": {...}}
    {"n": 0, "type": "response", "t": 0.0021, "status": 200, "headers": {"content-type": ...}}
    {"n": 0, "type": "chunk", "t": 0.0105, "data": "data: {...}\\n\\n"}     (or "b64": ...)
    {"n": 0, "type": "end", "t": 0.2113, "outcome": "complete"}

``t`` is seconds since the request was sent, on trio's clock. ``outcome`` is ``complete``,
``cancelled`` (the client stopped reading: a timeout of its own, or an interrupt; replay then
stays silent after the last chunk, as the server was), or the name of the httpx error that
ended it (``RemoteProtocolError`` for a cut stream, ``ConnectError`` before any response;
replay raises the same class at the same time). The endpoint is relative to the base URL, so
a cassette recorded against one server replays under any ``url``.

What is kept out: request headers are never written (the API key travels there), response
headers are reduced to ``content-type`` and ``retry-after`` (with ``date`` beside it, what
an HTTP-date ``Retry-After`` counts from), and the key is redacted from
every chunk and error message should a server echo it, in its escaped forms too, and across
chunk boundaries (a chunk that ends with what could be the key's start is written with the
next one, or as ``[redacted]`` if the body ends there).

Replay matches a request by method, endpoint and its JSON body (keys sorted). Recordings of
the same request are served in the order they were recorded, the last one again once the
others are used (a 429 then a 200 replays as a retry that succeeds; a hundred agents asking
the same thing share one recording). An interaction is written when it ends, and replay
serves identical requests in the order they arrive: identical requests made at once may be
paired with each other's recordings (an agent may get the 429 another got). A request with
no recording raises ``NoRecordingError`` naming it; the plugin turns that into an
``llm_error`` for the agent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from pathlib import Path
from typing import Any, TextIO, final

import attrs

from engine import EngineError

FORMAT = "engine-llm-cassette"
VERSION = 1
KEPT_HEADERS = ("content-type", "retry-after")
"""The response headers a recording keeps (and ``date`` with a ``retry-after``)."""


class CassetteError(EngineError):
    """Raised when a cassette file cannot be read (names the file and the line)."""


class NoRecordingError(EngineError):
    """Raised by replay for a request the cassette holds no recording of (names it)."""


def request_key(method: str, endpoint: str, body: bytes) -> str:
    """What replay matches on: the method, the endpoint and the body's JSON, keys sorted."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = body.decode("utf-8", "replace")
    return f"{method} {endpoint} {canonical}"


def describe_body(method: str, endpoint: str, body: Any) -> str:
    """Names a request in errors: endpoint, model, the start of its last message, a digest."""
    digest = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:12]
    model, last = None, ""
    if isinstance(body, dict):
        model = body.get("model")
        messages = body.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
            content = messages[-1].get("content")
            last = content if isinstance(content, str) else json.dumps(content)
    last = last if len(last) <= 60 else last[:60] + "..."
    return f"{method} {endpoint} (model {model!r}, last message {last!r}, body {digest})"


@final
@attrs.define(eq=False)
class Interaction:
    """One recorded request and what came back."""

    method: str
    endpoint: str
    body: Any
    status: int | None = None
    headers: dict[str, str] = attrs.Factory(dict)
    t_response: float = 0.0
    chunks: list[tuple[float, bytes]] = attrs.Factory(list)
    t_end: float = 0.0
    outcome: str = "cancelled"
    message: str = ""

    def lines(self, n: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [
            {
                "n": n,
                "type": "request",
                "method": self.method,
                "endpoint": self.endpoint,
                "body": self.body,
            }
        ]
        if self.status is not None:
            out.append(
                {
                    "n": n,
                    "type": "response",
                    "t": self.t_response,
                    "status": self.status,
                    "headers": self.headers,
                }
            )
        for t, data in self.chunks:
            line: dict[str, Any] = {"n": n, "type": "chunk", "t": t}
            try:
                line["data"] = data.decode("utf-8")
            except UnicodeDecodeError:  # a chunk may end inside a character
                line["b64"] = base64.b64encode(data).decode("ascii")
            out.append(line)
        end: dict[str, Any] = {"n": n, "type": "end", "t": self.t_end, "outcome": self.outcome}
        if self.message:
            end["message"] = self.message
        out.append(end)
        return out


# -- writing ------------------------------------------------------------------------------


@final
class CassetteWriter:
    """Appends interactions to a cassette file (the header first, if the file is new)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file: TextIO | None = self.path.open("a", encoding="utf-8")
        self._n = 0
        if new:
            self._file.write(json.dumps({"format": FORMAT, "version": VERSION}) + "\n")
        else:
            self._n = sum(1 for _ in _read(self.path))
        self.written = 0
        """Interactions written by this writer."""

    def write(self, interaction: Interaction) -> None:
        """One interaction, all its lines at once (small: no thread is worth it)."""
        if self._file is None:
            return
        text = "".join(
            json.dumps(line, separators=(",", ":")) + "\n" for line in interaction.lines(self._n)
        )
        self._file.write(text)
        self._file.flush()
        self._n += 1
        self.written += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# -- reading ------------------------------------------------------------------------------


def _read(path: Path) -> list[Interaction]:
    """The interactions of a cassette, in order.

    Raises:
        CassetteError: Not a cassette, or a line that does not fit (its number given).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CassetteError(f"cannot read cassette {str(path)!r}: {exc}") from None
    lines = text.splitlines()
    where = f"cassette {str(path)!r}"
    if not lines:
        raise CassetteError(f"{where} is empty")
    try:
        header = json.loads(lines[0])
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CassetteError(f"{where} is not an engine-llm cassette (line 1)")
    if header.get("version") != VERSION:
        raise CassetteError(f"{where} has version {header.get('version')!r}; {VERSION} is known")
    found: dict[int, Interaction] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            _apply(found, json.loads(line))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CassetteError(f"{where}, line {number}: {type(exc).__name__}: {exc}") from None
    return [found[n] for n in sorted(found)]


def _time(value: Any) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"'t' must be a finite number >= 0, not {value!r}")
    return float(value)


def _apply(found: dict[int, Interaction], line: Any) -> None:
    n, kind = line["n"], line["type"]
    if type(n) is not int:
        raise ValueError(f"'n' must be an integer, not {n!r}")
    if kind == "request":
        if n in found:
            raise ValueError(f"interaction {n} has two requests")
        method, endpoint = line["method"], line["endpoint"]
        if type(method) is not str or type(endpoint) is not str:
            raise ValueError("'method' and 'endpoint' must be strings")
        found[n] = Interaction(method, endpoint, line["body"])
        return
    rec = found[n]
    if kind == "response":
        status = line["status"]
        if type(status) is not int or not 100 <= status <= 599:
            raise ValueError(f"'status' must be an HTTP status, not {status!r}")
        headers = line.get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise ValueError("'headers' must map names to strings")
        rec.status, rec.t_response, rec.headers = status, _time(line["t"]), headers
    elif kind == "chunk":
        data = line["data"].encode() if "data" in line else base64.b64decode(line["b64"])
        rec.chunks.append((_time(line["t"]), data))
    elif kind == "end":
        rec.t_end, rec.outcome = _time(line["t"]), str(line["outcome"])
        rec.message = str(line.get("message", ""))
    else:
        raise ValueError(f"unknown line type {kind!r}")


def load(path: str | Path) -> list[Interaction]:
    """The interactions of the cassette at ``path`` (``CassetteError`` if it is not one)."""
    return _read(Path(path))
