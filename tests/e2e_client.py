"""A separate client process for the end-to-end test: drives agents over TCP.

Usage: ``python e2e_client.py PORT TOKEN N AGENTS``. Sends the token, then N valid events
(payload = sequence number) interleaved with malformed lines, reads until every output and
error record has arrived (or 60 s), and prints a JSON summary on stdout.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections import Counter

BAD = [
    b"{not json\n",
    b'{"agent": "nobody", "event": "say", "payload": -1}\n',
    b'{"agent": "a0", "event": "shout", "payload": -1}\n',
    b'{"agent": "a0", "event": "say", "payload": "' + b"x" * 10000 + b'"}\n',
    b'{"agent": "a0", "event": "say", "priority": 9}\n',
    b'{"agent": "a0", "event": "say", "payload": ' + b"9" * 5000 + b"}\n",
]


def main() -> None:
    port, token, n, agents = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    outputs: list[int] = []
    errors: Counter[str] = Counter()
    expected_errors = len(BAD) * (n // 1000)
    done = threading.Event()

    def reader() -> None:
        buf = b""
        while not done.is_set():
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                record = json.loads(line)
                if "error" in record:
                    errors[record["error"]] += 1
                else:
                    outputs.append(record["output"])
            if len(outputs) >= n and sum(errors.values()) >= expected_errors:
                done.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    sock.sendall(json.dumps({"token": token}).encode() + b"\n")
    lines = []
    for i in range(n):
        lines.append(
            json.dumps(
                {"agent": f"a{i % agents}", "event": "say", "payload": i, "priority": i % 4}
            ).encode()
            + b"\n"
        )
        if i % 1000 == 999:
            lines.extend(BAD)
    start = time.monotonic()
    sock.sendall(b"".join(lines))
    done.wait(60)
    print(
        json.dumps(
            {
                "outputs": sorted(outputs),
                "errors": dict(errors),
                "seconds": time.monotonic() - start,
            }
        )
    )
    sock.close()


if __name__ == "__main__":
    main()
