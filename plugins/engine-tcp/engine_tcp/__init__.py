"""engine-tcp: newline-delimited JSON over TCP, so another process can drive agents and read
their outputs.

``TcpPlugin`` is registered under both ``engine.receptors: tcp`` and ``engine.effectors: tcp``;
one object plays both roles.

As a receptor (``run``) it listens on ``host:port`` (``127.0.0.1`` and an ephemeral port by
default; the bound port is written to ``port_file`` once listening, and kept in ``.port``).
Each connection sends lines ``{"agent": ..., "event": ..., "payload": ..., "priority": ...}``
(payload and priority optional). A valid line is sent with ``await sink.send``: while the
agent's mailbox is full the connection is not read, so TCP flow control slows that client
down. A bad line (malformed JSON, a number Python or JSON cannot take, wrong or missing
fields, bad priority, unknown agent or event, a line over ``max_line`` bytes) gets an error
line ``ErrorRecord.to_json()`` written back to that connection, is reported with
``sink.reject`` and the connection goes on (an oversized line is skipped up to its newline).

Connections cost only their own peer, and idle ones cannot lock the others out:

* With a ``token``, the first line must be ``{"token": "..."}``; anything else, or nothing
  within ``auth_timeout`` seconds of the accept, gets ``Unauthorized`` and the connection is
  closed. At most ``max_unauthenticated`` connections wait for their token at once: one more
  closes the oldest waiting one (``TooManyConnections``), so peers that connect and say nothing
  cannot keep a client with the token out.
* At most ``max_connections`` are authenticated (every connection, without a token); one more
  gets ``TooManyConnections`` and is closed. An authenticated connection that sends nothing
  (an empty line is a keep-alive) for ``idle_timeout`` seconds gets ``IdleTimeout`` and is
  closed.
* The effector's ``deliver`` is synchronous and never waits: it encodes a batch once and
  queues the same ``bytes`` for every authenticated connection, whose own writer task sends
  it. A connection that would have more than ``send_buffer`` bytes waiting, or whose one write
  takes longer than ``send_timeout`` seconds, is dropped at once and reported as
  ``SlowConsumer``; the other clients and the runtime never wait for it.

Every connection the server closes for a reason is reported with ``sink.reject`` (the client
is told first when it can be) and counted in ``statistics().dropped``. A connection that is
gone is dropped quietly. ``aclose`` writes what is still queued and closes every connection.
With ``forward_errors``, records refused by *other* receptors are written to every
authenticated connection too. Nothing a client does ends the runtime: errors of one
connection close that connection.
"""

from __future__ import annotations

from ._plugin import TcpPlugin as TcpPlugin
from ._plugin import TcpStatistics as TcpStatistics

__all__ = ["TcpPlugin", "TcpStatistics"]
