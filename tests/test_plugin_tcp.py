"""The engine-tcp distribution (plugins/engine-tcp), found through its entry points: one object
that is both receptor and effector, serving newline-delimited JSON on loopback. Real sockets on
127.0.0.1, every wait bounded by ``trio.fail_after``."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import engine
from engine.environment import _discovery as _plugins
from engine.plugin_spec import EFFECTORS, RECEPTORS, Effector, ErrorRecord, EventSink, Receptor

LIGHT = engine.Machine(
    "light",
    states=["red", "green", "yellow"],
    initial="red",
    transitions=[
        ("red", "tick", "green", "go"),
        ("green", "tick", "yellow", "slow"),
        ("yellow", "tick", "red", "stop"),
        ("*", "fault", "red", "stop"),
    ],
)


def echo() -> engine.Machine:
    machine = engine.Machine("echo", ["on"], "on", [("on", "say", None)])

    @machine.handler("on", "say")
    def say(agent: engine.AgentContext, event: engine.Event) -> engine.Step:
        return engine.Step(outputs=[event.payload])

    return machine


ECHO = echo()


def tcp_factory(group: str = RECEPTORS) -> Any:
    found = [ep for ep in entry_points(group=group) if ep.name == "tcp"]
    assert len(found) == 1, f"{found}: install it with pip install -e plugins/engine-tcp"
    return found[0].load()


def make_tcp(**config: Any) -> Any:
    return _plugins.create("tcp", tcp_factory(), config)


def lines(*items: Any) -> bytes:
    return b"".join((i if isinstance(i, bytes) else json.dumps(i).encode()) + b"\n" for i in items)


def tick(agent: str, **extra: Any) -> dict[str, Any]:
    return {"agent": agent, "event": "tick", **extra}


class Client:
    """A line-oriented loopback client."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    @classmethod
    async def connect(cls, port: int, rcvbuf: int | None = None) -> Client:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        if rcvbuf is not None:  # a small window: the server's writes block sooner
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(("127.0.0.1", port))
        return cls(trio.SocketStream(sock))

    async def send(self, *items: Any) -> None:
        await self.stream.send_all(lines(*items))

    async def recv(self, seconds: float = 5.0) -> Any:
        """The next JSON line, or None at the end of the stream."""
        with trio.fail_after(seconds):
            while b"\n" not in self.buf:
                data = await self.stream.receive_some(1 << 20)
                if not data:
                    assert not self.buf, f"stream ended inside a line: {bytes(self.buf[:80])!r}"
                    return None
                self.buf += data
        line, _, rest = bytes(self.buf).partition(b"\n")
        self.buf = bytearray(rest)
        return json.loads(line)

    async def recv_n(self, n: int) -> list[Any]:
        return [await self.recv() for _ in range(n)]

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@asynccontextmanager
async def serving(
    plugin: Any, agents: tuple[str, ...] = ("l1", "l2"), **spawn: Any
) -> AsyncIterator[tuple[engine.Runtime, int]]:
    """A runtime with ``plugin`` as receptor and effector, ``LIGHT`` agents, the bound port."""
    wired = engine.Plugin(plugin, "tcp")
    async with engine.open_runtime(receptors=[wired], effectors=[wired]) as rt:
        for agent in agents:
            rt.spawn(LIGHT, agent, **spawn)
        with trio.fail_after(5):
            await plugin.listening.wait()
        yield rt, plugin.port


def run(main: Callable[[], Any], seconds: float = 20.0) -> Any:
    async def bounded() -> Any:
        with trio.fail_after(seconds):
            return await main()

    return trio.run(bounded)


async def settle() -> None:
    """Let the server accept what is pending (so a fresh client gets the next outputs)."""
    await trio.testing.wait_all_tasks_blocked(0.05)


async def until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    with trio.fail_after(seconds):
        while not check():
            await trio.sleep(0.01)


class FakeSink:
    """An ``EventSink`` without a runtime, for driving the plugin's effector side directly."""

    name = "tcp"

    def __init__(self) -> None:
        self.sent: list[tuple[Any, Any, Any, int]] = []
        self.rejected: list[ErrorRecord] = []

    def send_nowait(
        self, agent_id: Any, event: Any, payload: Any = None, priority: int = 1
    ) -> None:
        self.sent.append((agent_id, event, payload, priority))

    async def send(self, agent_id: Any, event: Any, payload: Any = None, priority: int = 1) -> None:
        await trio.lowlevel.checkpoint()
        self.send_nowait(agent_id, event, payload, priority)

    def reject(self, record: ErrorRecord) -> None:
        self.rejected.append(record)


def big_batches(count: int, size: int) -> list[engine.OutputBatch]:
    """``count`` batches of one output each: ``"<i>:" + "x" * size``."""
    batches: list[engine.OutputBatch] = []
    rt = engine.Runtime(on_output=batches.append)
    rt.spawn(ECHO, "e")
    for i in range(count):
        rt.send_nowait("e", "say", f"{i}:" + "x" * size)
        rt.run_until_idle()
    assert len(batches) == count
    return batches


# -- tests ------------------------------------------------------------------------------------


def test_one_factory_in_both_groups_and_one_object_in_both_roles() -> None:
    receptor_factory, effector_factory = tcp_factory(RECEPTORS), tcp_factory(EFFECTORS)
    assert receptor_factory is effector_factory
    infos = [i for i in _plugins.discover() if i.name == "tcp"]
    assert {i.role for i in infos} == {"receptor", "effector"}
    assert {i.distribution for i in infos} == {"engine-tcp"}
    plugin = make_tcp()
    assert isinstance(plugin, Receptor)
    assert isinstance(plugin, Effector)
    assert not inspect.iscoroutinefunction(plugin.deliver)  # never waits: in the drain loop
    assert isinstance(FakeSink(), EventSink)


def test_drives_agents_streams_outputs_to_every_client_and_writes_a_port_file(
    tmp_path: Path,
) -> None:
    port_file = tmp_path / "run" / "tcp.port"
    port_file.parent.mkdir()
    plugin = make_tcp(port_file=str(port_file))

    async def main() -> None:
        async with serving(plugin) as (rt, port):
            assert port_file.read_text() == f"{port}\n"
            assert plugin.address == ("127.0.0.1", port)  # loopback unless configured
            async with await Client.connect(port) as a, await Client.connect(port) as b:
                await settle()
                await a.send(tick("l1"), tick("l1"), tick("l2", priority=3))
                expected = [
                    {"agent": "l1", "output": "go"},
                    {"agent": "l1", "output": "slow"},
                    {"agent": "l2", "output": "go"},
                ]
                got = await a.recv_n(3)
                assert sorted(got, key=json.dumps) == sorted(expected, key=json.dumps)
                assert [g for g in got if g["agent"] == "l1"] == expected[:2]  # in order
                assert await b.recv_n(3) == got  # the other client sees the same outputs
                assert (rt.state("l1"), rt.state("l2")) == ("yellow", "green")
                await b.send({"agent": "l2", "event": "fault", "payload": {"why": "test"}})
                assert await a.recv() == {"agent": "l2", "output": "stop"}
                assert await b.recv() == {"agent": "l2", "output": "stop"}
        assert not port_file.exists()  # removed when it stopped listening
        assert rt.rejected() == []
        assert rt.effector_failures() == []

    run(main)


def test_token_is_required_first_and_unauthenticated_clients_get_nothing() -> None:
    plugin = make_tcp(token="s3cret", auth_timeout=0.5)

    async def main() -> None:
        async with serving(plugin) as (rt, port):
            async with await Client.connect(port) as wrong:
                await wrong.send({"token": "guess"}, tick("l1"))
                refused = await wrong.recv()
                assert refused["error"] == "Unauthorized"
                assert refused["line"] == 1
                assert "raw" not in refused  # a wrong token is not echoed or recorded
                assert await wrong.recv() is None  # closed
            async with await Client.connect(port) as eager:
                await eager.send(tick("l1"))  # an event before the token
                assert (await eager.recv())["error"] == "Unauthorized"
                assert await eager.recv() is None
            assert rt.state("l1") == "red"  # nothing got through
            async with await Client.connect(port) as idle, await Client.connect(port) as good:
                await settle()
                await good.send({"token": "s3cret"}, tick("l1"))
                assert await good.recv() == {"agent": "l1", "output": "go"}
                # ``idle`` never sent its token: no outputs, then refused after auth_timeout
                late = await idle.recv()
                assert late["error"] == "Unauthorized"
                assert "no token within 0.5 s" in late["message"]
                assert await idle.recv() is None
            errors = [r.error for r in rt.rejected()]
            assert errors == ["Unauthorized"] * 3
            stats = plugin.statistics()
            assert (stats.accepted, stats.dropped) == (4, {"Unauthorized": 3})
            assert all(r.raw is None and "guess" not in r.message for r in rt.rejected())

    run(main)


def test_an_oversized_line_is_refused_and_the_connection_stays_usable() -> None:
    plugin = make_tcp(max_line=64)
    fits = json.dumps(tick("l1", payload=""))
    fits = json.dumps(tick("l1", payload="p" * (64 - len(fits))))
    assert len(fits) == 64

    async def main() -> None:
        async with serving(plugin) as (rt, port), await Client.connect(port) as c:
            await c.stream.send_all(b'{"agent": "l1", "event": "tick", "payload": "')
            for _ in range(20):  # 20 KiB arriving in pieces, no newline yet
                await c.stream.send_all(b"y" * 1024)
            await c.stream.send_all(b'"}\n' + fits.encode() + b"\n")
            error = await c.recv()
            assert error["error"] == "LineTooLong"
            assert error["line"] == 1
            assert error["raw"].startswith('{"agent": "l1"')
            assert len(error["raw"]) <= 203
            assert await c.recv() == {"agent": "l1", "output": "go"}  # line 2, exactly 64 bytes
            await c.send(tick("l1"))
            assert await c.recv() == {"agent": "l1", "output": "slow"}
            assert [r.error for r in rt.rejected()] == ["LineTooLong"]

    run(main)


def test_extra_connections_are_refused_until_one_closes() -> None:
    plugin = make_tcp(max_connections=2)

    async def main() -> None:
        async with serving(plugin) as (rt, port):
            a, b = await Client.connect(port), await Client.connect(port)
            await settle()
            await a.send(tick("l1"))
            await b.send(tick("l2"))
            await a.recv_n(2)  # both are served
            async with await Client.connect(port) as extra:
                refused = await extra.recv()
                assert refused["error"] == "TooManyConnections"
                assert "peer" in refused
                assert await extra.recv() is None
            await a.aclose()
            for _ in range(100):  # the server notices a's close asynchronously
                async with await Client.connect(port) as again:
                    await again.send(tick("l1"))
                    first = await again.recv()
                    if first.get("error") != "TooManyConnections":
                        assert first == {"agent": "l1", "output": "slow"}
                        break
                await trio.sleep(0.02)
            else:
                pytest.fail("a connection slot never came free")
            await b.aclose()
            assert {r.error for r in rt.rejected()} == {"TooManyConnections"}

    run(main)


def test_bad_lines_get_an_error_back_are_reported_and_the_server_goes_on() -> None:
    plugin = make_tcp()

    async def main() -> None:
        async with serving(plugin) as (rt, port), await Client.connect(port) as bad:
            async with await Client.connect(port) as observer:
                await settle()
                await bad.send(
                    b"{oops",
                    tick("ghost"),
                    {"agent": "l1", "event": "honk"},
                    tick("l1", priority=7),
                    [1, 2, 3],
                    {"agent": "l1"},
                    b"\xff\xfe",
                    tick("l1"),
                )
                errors = await bad.recv_n(7)
                assert [(e["error"], e["line"]) for e in errors] == [
                    ("JSONDecodeError", 1),
                    ("AgentNotFoundError", 2),
                    ("UnknownEventError", 3),
                    ("InvalidPriority", 4),
                    ("InvalidRecord", 5),
                    ("MissingField", 6),
                    ("UnicodeDecodeError", 7),
                ]
                assert all(
                    e["source"] == "tcp" and e["peer"].startswith("127.0.0.1:") for e in errors
                )
                assert errors[0]["raw"] == "{oops"
                assert "ghost" in errors[1]["message"]
                assert await bad.recv() == {"agent": "l1", "output": "go"}
                # reported through the sink as well, and only the sender got them back
                assert [r.to_json() for r in rt.rejected()] == errors
                assert await observer.recv() == {"agent": "l1", "output": "go"}
            assert rt.receptor_failures() == []
            assert rt.effector_failures() == []

    run(main)


def test_a_full_mailbox_stops_reading_the_connection_instead_of_buffering() -> None:
    plugin = make_tcp()

    async def main() -> None:
        async with serving(plugin, agents=("l1",), capacity=2) as (rt, port):
            rt.pause("l1")
            async with await Client.connect(port) as c:
                await c.send(*[tick("l1") for _ in range(9)])
                await until(lambda: len(rt.queued("l1")) == 2)
                await trio.sleep(0.2)
                assert len(rt.queued("l1")) == 2  # the reader waits for room
                assert rt.rejected() == []
                assert rt.statistics("l1").dropped == 0
                rt.resume("l1")
                got = await c.recv_n(9)
                assert [g["output"] for g in got] == ["go", "slow", "stop"] * 3
                assert rt.dead_letters() == []

    run(main)


def test_a_client_that_reads_late_loses_nothing_within_its_send_buffer() -> None:
    plugin = make_tcp(send_buffer=32 << 20, send_timeout=10)
    size = 2 << 20
    batches = big_batches(8, size)  # 16 MiB: more than socket buffers hold
    sink = FakeSink()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(plugin.run, sink)
            await plugin.listening.wait()
            async with await Client.connect(plugin.port, rcvbuf=4096) as c:
                await c.send(tick("x"))
                await until(lambda: bool(sink.sent))  # the server knows this connection
                for batch in batches:
                    plugin.deliver(batch)  # does not wait: the client does not read yet
                assert plugin.statistics().buffered > 8 * size // 2
                for i in range(len(batches)):  # every batch, whole and in order
                    assert await c.recv(10) == {"agent": "e", "output": f"{i}:" + "x" * size}
                await until(lambda: plugin.statistics().buffered == 0)
            assert sink.rejected == []
            nursery.cancel_scope.cancel()

    run(main, 60)


def test_a_client_that_stops_reading_is_dropped_after_send_timeout() -> None:
    plugin = make_tcp(send_buffer=64 << 20, send_timeout=0.3)  # the buffer would take it all
    batches = big_batches(8, 2 << 20)
    sink = FakeSink()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(plugin.run, sink)
            await plugin.listening.wait()
            async with await Client.connect(plugin.port, rcvbuf=4096) as stuck:
                await stuck.send(tick("x"))
                await until(lambda: bool(sink.sent))
                for batch in batches:
                    plugin.deliver(batch)
                await until(lambda: bool(sink.rejected))  # one write has waited 0.3 s
                (record,) = sink.rejected
                assert record.error == "SlowConsumer"
                assert "a write did not complete within 0.3 s" in record.message
                assert record.context["peer"].startswith("127.")
                received = 0
                with trio.fail_after(5), contextlib.suppress(trio.BrokenResourceError):
                    while data := await stuck.stream.receive_some(1 << 20):
                        received += len(data)  # what was sent before the drop, then the end
                assert received < 8 * (2 << 20)
            async with await Client.connect(plugin.port) as fresh:  # the server goes on
                await fresh.send(tick("y"))
                await until(lambda: len(sink.sent) == 2)
                (small,) = big_batches(1, 3)
                plugin.deliver(small)
                assert await fresh.recv() == {"agent": "e", "output": "0:xxx"}
            nursery.cancel_scope.cancel()

    run(main, 60)


def test_vanished_clients_are_dropped_quietly() -> None:
    plugin = make_tcp()

    async def main() -> None:
        async with serving(plugin) as (rt, port), await Client.connect(port) as steady:
            rude = await Client.connect(port)
            await rude.stream.send_all(b'{"agent": "l1", "ev')  # half a line...
            await settle()
            rude.stream.socket.setsockopt(  # ...then a reset instead of a close
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            await rude.aclose()
            quiet = await Client.connect(port)
            await settle()
            await quiet.send(tick("l2"))
            await quiet.aclose()  # gone while its output is on the way to it
            assert await steady.recv() == {"agent": "l2", "output": "go"}
            for expected in ["go", "slow", "stop"] * 5:  # outputs keep flowing to the others
                await steady.send(tick("l1"))
                assert await steady.recv() == {"agent": "l1", "output": expected}
            assert rt.rejected() == []  # nothing to report: the half line died with its client
            assert rt.effector_failures() == []
            assert rt.receptor_failures() == []

    run(main)


def test_outputs_still_queued_at_shutdown_are_flushed_before_the_connections_close() -> None:
    plugin = make_tcp(send_buffer=32 << 20)
    size = 1 << 20
    got: list[Any] = []

    async def read_later(client: Client) -> None:
        async with client:
            await trio.sleep(0.3)  # not reading yet: the outputs pile up in the plugin's queue
            while (item := await client.recv()) is not None:
                got.append(item)

    async def main() -> None:
        async with trio.open_nursery() as outer, serving(plugin, agents=()) as (rt, port):
            rt.spawn(ECHO, "e")
            client = await Client.connect(port, rcvbuf=4096)
            await client.send({"agent": "e", "event": "say", "payload": "hello"})
            assert await client.recv() == {"agent": "e", "output": "hello"}  # registered
            outer.start_soon(read_later, client)
            for i in range(20):  # 20 MiB: more than the socket buffers hold
                rt.send_nowait("e", "say", f"{i}:" + "x" * size)
            await rt.wait_until_idle()
            # leave now: the runtime shuts down while most outputs are still queued; the
            # client reads to the end of the stream after the runtime has closed

    run(main)
    assert len(got) == 20
    for i, item in enumerate(got):
        assert item == {"agent": "e", "output": f"{i}:" + "x" * size}


async def forwarding(wake: bool) -> bool:
    """A second receptor refuses something; with ``forward_errors`` every client gets it (and
    tcp's own records only their sender). Returns whether the forwarded record arrived within a
    second by itself; ``wake`` sends a message right after the refusal."""
    sinks: list[EventSink] = []

    class Capture:
        async def run(self, sink: EventSink) -> None:
            sinks.append(sink)
            await trio.sleep_forever()

    plugin = make_tcp(forward_errors=True)
    wired = engine.Plugin(plugin, "tcp")
    async with engine.open_runtime(
        receptors=[wired, engine.Plugin(Capture(), "other")], effectors=[wired]
    ) as rt:
        rt.spawn(LIGHT, "l1")
        await plugin.listening.wait()
        async with (
            await Client.connect(plugin.port) as a,
            await Client.connect(plugin.port) as b,
        ):
            await settle()
            await a.send(tick("l1"))
            assert await a.recv() == await b.recv() == {"agent": "l1", "output": "go"}
            await until(lambda: bool(sinks))
            sinks[0].reject(ErrorRecord("other", "Broken", "from elsewhere", None, {"n": 1}))
            if wake:
                rt.send_nowait("l1", "tick")
            prompt = False
            with trio.move_on_after(1):
                first = await a.recv()
                prompt = True
            if not prompt:  # still queued in the runtime: a message makes it flush the queue
                rt.send_nowait("l1", "tick")
                first = await a.recv()
            elif not wake:  # it came by itself: now send the tick the rest expects
                rt.send_nowait("l1", "tick")
            forwarded = {"error": "Broken", "message": "from elsewhere", "source": "other", "n": 1}
            assert first == forwarded
            assert await b.recv() == forwarded
            assert await a.recv() == await b.recv() == {"agent": "l1", "output": "slow"}
            await a.send(b"nope")  # tcp's own record goes to its sender only, and once
            assert (await a.recv())["error"] == "JSONDecodeError"
            await a.send({"agent": "l1", "event": "fault"})
            assert await a.recv() == {"agent": "l1", "output": "stop"}
            assert await b.recv() == {"agent": "l1", "output": "stop"}
    return prompt


def test_forward_errors_sends_other_receptors_records_to_every_client() -> None:
    assert run(lambda: forwarding(wake=True))


def test_forwarded_records_do_not_wait_for_other_traffic() -> None:
    assert run(lambda: forwarding(wake=False))


@pytest.mark.slow
def test_python_m_engine_run_serves_tcp_from_an_app_file(tmp_path: Path) -> None:
    port_file = tmp_path / "tcp.port"
    app = tmp_path / "app.toml"
    app.write_text(
        textwrap.dedent(f"""
        [machines.light]
        path = "tests.test_plugin_tcp:LIGHT"
        [[agents]]
        machine = "light"
        ids = ["l1"]
        [[plugins]]
        name = "tcp"
        config = {{ token = "t0k", port_file = "{port_file}" }}
    """)
    )
    env = {k: v for k, v in os.environ.items() if k != "ENGINE_DISABLE_PLUGIN_AUTOLOAD"}
    env["PYTHONPATH"] = str(Path.cwd())
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "run", str(app), "--for", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:

        async def main() -> None:
            await until(lambda: port_file.exists() or proc.poll() is not None, 30)
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            port = int(port_file.read_text())
            async with await Client.connect(port) as c:
                await c.send({"token": "t0k"}, tick("l1"), tick("ghost"))
                # an error is written back at once, an output after the agent's step: either
                # may come first
                got = await c.recv_n(2)
                assert {"agent": "l1", "output": "go"} in got
                assert [g["error"] for g in got if "error" in g] == ["AgentNotFoundError"]

        run(main, 40)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "receptors: ['tcp']; effectors: ['tcp']" in err
    assert "1 processed" in err
    assert "1 inputs refused" in err
    assert not port_file.exists()


# -- hostile input and hostile peers ----------------------------------------------------------


def test_a_number_python_cannot_take_gets_an_error_line_and_the_connection_goes_on() -> None:
    """A 5000-digit integer made ``json.loads`` raise a plain ValueError, and the connection
    was closed without a word to its client."""
    plugin = make_tcp()
    huge = b'{"agent": "l1", "event": "tick", "payload": ' + b"9" * 5000 + b"}"

    async def main() -> None:
        async with serving(plugin) as (rt, port), await Client.connect(port) as c:
            await c.send(huge, b'{"agent": "l1", "event": "tick", "payload": NaN}', tick("l1"))
            errors = await c.recv_n(2)
            assert [(e["error"], e["line"]) for e in errors] == [
                ("InvalidNumber", 1),
                ("InvalidNumber", 2),
            ]
            assert "5000 digits" in errors[0]["message"]
            assert await c.recv() == {"agent": "l1", "output": "go"}  # still served
            await c.send(huge, tick("l1"))
            assert (await c.recv())["error"] == "InvalidNumber"
            assert await c.recv() == {"agent": "l1", "output": "slow"}
            assert [r.error for r in rt.rejected()] == ["InvalidNumber"] * 3
            assert rt.receptor_failures() == []

    run(main)


async def deliver(plugin: Any, batch: engine.OutputBatch) -> None:
    result = plugin.deliver(batch)
    if inspect.isawaitable(result):  # it used to be async and wait for every client
        await result


async def read_all(client: Client, count: int, size: int) -> None:
    for i in range(count):
        assert await client.recv(10) == {"agent": "e", "output": f"{i}:" + "x" * size}


def test_deliver_never_waits_for_a_client_that_stops_reading() -> None:
    """With the defaults: a client that does not read cost every other client (and the
    runtime) ``send_timeout`` seconds for each batch that found its queue full."""
    plugin = make_tcp()
    size = 64 << 10
    batches = big_batches(160, size)  # 10 MiB in 160 batches: more than any kernel buffers
    sink = FakeSink()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(plugin.run, sink)
            await plugin.listening.wait()
            stuck = await Client.connect(plugin.port, rcvbuf=4096)
            good = await Client.connect(plugin.port)
            await stuck.send(tick("x"))
            await good.send(tick("y"))
            await until(lambda: len(sink.sent) == 2)  # both are clients now
            async with trio.open_nursery() as readers:
                readers.start_soon(read_all, good, len(batches), size)
                with trio.fail_after(2):
                    for batch in batches:
                        await deliver(plugin, batch)
            # under send_buffer (16 MiB by default): waiting for the stuck client, not dropped
            stats = plugin.statistics()
            assert stats.connections == 2
            assert stats.dropped == {}
            assert 0 < stats.buffered <= 160 * (size + 64)
            assert sink.rejected == []
            await stuck.aclose()
            await good.aclose()
            nursery.cancel_scope.cancel()

    run(main, 30)


def test_a_client_past_its_send_buffer_is_dropped_and_counted_and_the_others_go_on() -> None:
    plugin = make_tcp(send_buffer=1 << 20)
    size = 64 << 10
    batches = big_batches(64, size)  # 4 MiB
    sink = FakeSink()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(plugin.run, sink)
            await plugin.listening.wait()
            stuck = await Client.connect(plugin.port, rcvbuf=4096)
            good = await Client.connect(plugin.port)
            await stuck.send(tick("x"))
            await good.send(tick("y"))
            await until(lambda: len(sink.sent) == 2)
            for i, batch in enumerate(batches):  # in step with the client that reads
                plugin.deliver(batch)  # synchronous: never waits
                assert await good.recv() == {"agent": "e", "output": f"{i}:" + "x" * size}
            (record,) = sink.rejected
            assert record.error == "SlowConsumer"
            assert "more than 1048576 bytes" in record.message
            assert record.context["peer"].startswith("127.")
            stats = plugin.statistics()
            assert (stats.connections, stats.dropped) == (1, {"SlowConsumer": 1})
            received = 0
            with trio.fail_after(5), contextlib.suppress(trio.BrokenResourceError):
                while data := await stuck.stream.receive_some(1 << 20):
                    received += len(data)  # what was sent before the drop, then the end
            assert received < len(batches) * size
            await stuck.aclose()
            await good.aclose()
            nursery.cancel_scope.cancel()

    run(main, 30)


def test_a_client_that_stops_reading_does_not_slow_the_runtime_down() -> None:
    """The whole path: receptor, dispatcher, effector. A stuck client and one that reads;
    every output reaches the reader, the stuck one is dropped once it is too far behind."""
    plugin = make_tcp(send_buffer=1 << 20)
    size = 32 << 10
    count = 200

    async def main() -> None:
        async with serving(plugin, agents=()) as (rt, port):
            rt.spawn(ECHO, "e")
            stuck = await Client.connect(port, rcvbuf=4096)
            good = await Client.connect(port)
            await settle()
            payloads = [
                {"agent": "e", "event": "say", "payload": f"{i}:" + "x" * size}
                for i in range(count)
            ]
            with trio.fail_after(5):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_all, good, count, size)
                    await good.send(*payloads)
            assert [r.error for r in rt.rejected()] == ["SlowConsumer"]
            assert plugin.statistics().dropped == {"SlowConsumer": 1}
            assert rt.effector_failures() == []
            await stuck.aclose()
            await good.aclose()

    run(main)


def test_idle_peers_without_the_token_cannot_take_the_clients_places() -> None:
    """Connections waiting for their token have places of their own: six silent peers used to
    take all four connections, and a client with the token was refused."""
    plugin = make_tcp(token="t", max_connections=4, auth_timeout=30)

    async def main() -> None:
        async with serving(plugin) as (rt, port):
            idle = [await Client.connect(port) for _ in range(6)]
            await settle()
            async with await Client.connect(port) as good:
                await good.send({"token": "t"}, tick("l1"))
                assert await good.recv() == {"agent": "l1", "output": "go"}
            assert rt.rejected() == []
            for client in idle:
                await client.aclose()

    run(main)


def test_the_oldest_peer_waiting_for_its_token_makes_room_for_a_new_one() -> None:
    plugin = make_tcp(token="t", max_connections=1, max_unauthenticated=2, auth_timeout=30)

    async def main() -> None:
        async with serving(plugin) as (rt, port):
            idle = []
            for _ in range(5):  # each one past the second closes the oldest waiting one
                idle.append(await Client.connect(port))
                await settle()
            for client in idle[:3]:
                evicted = await client.recv()
                assert evicted["error"] == "TooManyConnections"
                assert "waiting to send their token" in evicted["message"]
                assert await client.recv() is None
            stats = plugin.statistics()
            assert (stats.connections, stats.unauthenticated) == (0, 2)
            async with await Client.connect(port) as good:  # closes idle[3]
                await good.send({"token": "t"}, tick("l1"))
                assert await good.recv() == {"agent": "l1", "output": "go"}
                assert (await idle[3].recv())["error"] == "TooManyConnections"
                async with await Client.connect(port) as late:  # idle[4] and late wait
                    await late.send({"token": "t"})  # the right token, but no place for it
                    refused = await late.recv()
                    assert refused["error"] == "TooManyConnections"
                    assert "already has 1 clients" in refused["message"]
                    assert await late.recv() is None
                stats = plugin.statistics()
                assert (stats.connections, stats.unauthenticated) == (1, 1)  # good, idle[4]
                assert stats.accepted == 7
                assert stats.dropped == {"TooManyConnections": 5}
            assert [r.error for r in rt.rejected()] == ["TooManyConnections"] * 5
            for client in idle:
                await client.aclose()

    run(main)


def test_a_client_that_sends_nothing_for_idle_timeout_is_closed_and_its_place_freed() -> None:
    plugin = make_tcp(max_connections=2, idle_timeout=0.3)

    async def keep_alive(client: Client, until_: trio.Event) -> None:
        while not until_.is_set():
            await client.stream.send_all(b"\n")  # an empty line is a keep-alive
            await trio.sleep(0.05)

    async def main() -> None:
        async with serving(plugin) as (rt, port), trio.open_nursery() as nursery:
            alive, idle = await Client.connect(port), await Client.connect(port)
            await settle()
            async with await Client.connect(port) as third:  # both places are taken
                assert (await third.recv())["error"] == "TooManyConnections"
            stop = trio.Event()
            nursery.start_soon(keep_alive, alive, stop)
            closed = await idle.recv()
            assert closed["error"] == "IdleTimeout"
            assert "nothing received for 0.3 s" in closed["message"]
            assert await idle.recv() is None
            async with await Client.connect(port) as fourth:  # the idle one's place
                await fourth.send(tick("l1"))
                assert await fourth.recv() == {"agent": "l1", "output": "go"}
            await trio.sleep(0.4)  # longer than idle_timeout: kept by its empty lines
            stop.set()
            await alive.send(tick("l1"))
            assert await alive.recv() == {"agent": "l1", "output": "go"}  # it saw fourth's
            assert await alive.recv() == {"agent": "l1", "output": "slow"}
            assert [r.error for r in rt.rejected()] == ["TooManyConnections", "IdleTimeout"]
            assert plugin.statistics().dropped == {"TooManyConnections": 1, "IdleTimeout": 1}
            await alive.aclose()
            await idle.aclose()

    run(main)


def test_a_flood_of_connections_past_the_limit_is_refused_and_counted() -> None:
    plugin = make_tcp(max_connections=1)

    async def main() -> None:
        async with serving(plugin) as (rt, port), await Client.connect(port) as good:
            await settle()
            flood = [await Client.connect(port) for _ in range(40)]
            for client in flood:  # told why, or (past 16 at once) closed without a word
                first = await client.recv()
                assert first is None or first["error"] == "TooManyConnections"
                await client.aclose()
            await good.send(tick("l1"))
            assert await good.recv() == {"agent": "l1", "output": "go"}
            assert plugin.statistics().dropped == {"TooManyConnections": 40}
            assert len(rt.rejected()) == 40

    run(main)


def test_config_limits_are_validated_all_at_once() -> None:
    with pytest.raises(engine.ConfigError) as info:
        make_tcp(max_unauthenticated=0, idle_timeout=0, send_buffer=0, send_timeout=-1, max_line=0)
    message = str(info.value)
    for field in ("max_unauthenticated", "idle_timeout", "send_buffer", "send_timeout"):
        assert field in message
    assert make_tcp(idle_timeout=None).config.idle_timeout is None
    assert make_tcp(idle_timeout=float("inf")).config.idle_timeout == float("inf")  # TOML: inf
    defaults = make_tcp().config
    assert (defaults.max_unauthenticated, defaults.idle_timeout, defaults.send_buffer) == (
        8,
        300.0,
        16 << 20,
    )
