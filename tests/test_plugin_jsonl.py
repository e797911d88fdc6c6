"""The engine-jsonl distribution (plugins/engine-jsonl), found through its entry points: the
receptor reads JSON Lines from a file or stdin (refusing bad lines precisely, with backpressure,
optionally following the file), the effector writes outputs and error records as JSON Lines."""

from __future__ import annotations

import inspect
import io
import json
import math
import os
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import trio

import engine
from engine.cli import _main as _cli
from engine.environment import _discovery as _plugins
from engine.environment._config import load_app
from engine.plugin_spec import EFFECTORS, RECEPTORS, Effector, Receptor


def factory(group: str) -> Any:
    found = [ep for ep in entry_points(group=group) if ep.name == "jsonl"]
    assert len(found) == 1, f"{found}: install it with pip install -e plugins/engine-jsonl"
    return found[0].load()


def reader(**config: Any) -> Any:
    return _plugins.create("jsonl", factory(RECEPTORS), config)


def writer(**config: Any) -> Any:
    return _plugins.create("jsonl", factory(EFFECTORS), config)


def recorder() -> engine.Machine:
    """Keeps (event, payload, priority) of everything it gets; "tick" outputs "t"."""
    rec = engine.Machine(
        "rec", ["on"], "on", [("on", "tick", None, "t"), ("on", "tock", None)], unhandled="ignore"
    )

    def keep(agent: engine.AgentContext, event: engine.Event) -> None:
        agent.data.append((event.name, event.payload, event.priority))

    rec.handler("on", "tick")(keep)
    rec.handler("on", "tock")(keep)
    return rec


REC = recorder()


def echo() -> engine.Machine:
    """Outputs whatever payload it is given ("say"), or the table's output ("ping")."""
    machine = engine.Machine(
        "echo", ["on"], "on", [("on", "say", None), ("on", "ping", None, "pong")]
    )

    @machine.handler("on", "say")
    def say(agent: engine.AgentContext, event: engine.Event) -> engine.Step:
        return engine.Step(outputs=[event.payload])

    return machine


ECHO = echo()


async def until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll ``check`` on trio's clock (bounded)."""
    with trio.fail_after(seconds):
        while not check():
            await trio.sleep(0.01)


def run_reader(
    source: Any, agents: list[str], done: Callable[[engine.Runtime], bool], **spawn: Any
) -> engine.Runtime:
    holder: list[engine.Runtime] = []

    async def main() -> None:
        async with engine.open_runtime(receptors=[engine.Plugin(source, "jsonl")]) as rt:
            holder.append(rt)
            for agent in agents:
                rt.spawn(REC, agent, data=[], **spawn)
            await until(lambda: done(rt))

    trio.run(main)
    return holder[0]


def lines(*items: Any) -> bytes:
    return b"".join((i if isinstance(i, bytes) else json.dumps(i).encode()) + b"\n" for i in items)


def test_found_through_entry_points_as_two_objects() -> None:
    reader_cls, writer_cls = factory(RECEPTORS), factory(EFFECTORS)
    assert reader_cls is not writer_cls
    r, w = reader(path="in.jsonl"), writer(path="out.jsonl")
    assert isinstance(r, Receptor)
    assert isinstance(w, Effector)
    assert not hasattr(w, "run")
    assert not hasattr(r, "deliver")
    assert not inspect.iscoroutinefunction(w.deliver)  # synchronous: runs in the drain loop


def test_reads_a_file_and_sends_every_record_in_order(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        lines(
            {"agent": "a", "event": "tick"},
            {"agent": "b", "event": "tock", "payload": {"x": [1, 2]}, "priority": 3},
        )
        + b"\n   \n"  # blank lines are skipped
        + b'{"agent": "a", "event": "tick", "payload": 2}\r\n'  # CRLF
        + b'{"agent": 7, "event": "tick", "payload": "last line, no newline"}'
    )
    rt = run_reader(
        reader(path=str(path)),
        ["a", "b"],
        lambda rt: rt.statistics().processed >= 3 and bool(rt.rejected()),
    )
    assert rt.data("a") == [("tick", None, 1), ("tick", 2, 1)]
    assert rt.data("b") == [("tock", {"x": [1, 2]}, engine.Priority.CRITICAL)]
    # agent 7 does not exist: the last line was read and refused, not dropped silently
    (ghost,) = rt.rejected()
    assert (ghost.error, ghost.context) == ("AgentNotFoundError", {"path": str(path), "line": 6})
    assert rt.receptor_failures() == []  # it finished at the end of the file


def test_bad_lines_are_refused_by_name_with_line_numbers_and_reading_goes_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        lines(
            {"agent": "a", "event": "tick", "payload": 1},
            b"{not json",
            [1, 2],
            {"event": "tick"},
            {"agent": "a", "event": "tick", "colour": "red"},
            {"agent": ["a"], "event": "tick"},
            {"agent": "a", "event": "tick", "priority": 9},
            {"agent": "a", "event": "tick", "priority": True},
            {"agent": "ghost", "event": "tick"},
            {"agent": "a", "event": "nope"},
            {"agent": "a", "event": "tick", "payload": "x" * 500},
            b'{"agent": "a", "event": "\xff"}',
            {"agent": "a", "event": "tick", "payload": 2},
        )
    )
    rt = run_reader(
        reader(path=str(path), max_line=100),
        ["a"],
        lambda rt: rt.statistics().processed >= 2 and len(rt.rejected()) >= 11,
    )
    assert rt.data("a") == [("tick", 1, 1), ("tick", 2, 1)]
    got = [(r.error, r.context["line"]) for r in rt.rejected()]
    assert got == [
        ("JSONDecodeError", 2),
        ("InvalidRecord", 3),
        ("MissingField", 4),
        ("UnknownField", 5),
        ("InvalidField", 6),
        ("InvalidPriority", 7),
        ("InvalidPriority", 8),
        ("AgentNotFoundError", 9),
        ("UnknownEventError", 10),
        ("LineTooLong", 11),
        ("UnicodeDecodeError", 12),
    ]
    for record in rt.rejected():
        assert record.source == "jsonl"
        assert record.context["path"] == str(path)
        assert record.raw is not None
        assert len(record.raw) <= 203
    by_line = {r.context["line"]: r for r in rt.rejected()}
    assert by_line[2].raw == "{not json"
    assert "'agent'" in by_line[4].message
    assert "'colour'" in by_line[5].message
    assert "'priority' must be an integer 0..3" in by_line[7].message
    assert by_line[11].raw.startswith('{"agent": "a"')
    assert "longer than 100 bytes" in by_line[11].message


def test_reads_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    data = lines({"agent": "a", "event": "tick", "payload": "in"}, {"agent": "z", "event": "tick"})
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    rt = run_reader(reader(), ["a"], lambda rt: bool(rt.rejected()))  # path defaults to "-"
    assert rt.data("a") == [("tick", "in", 1)]
    (record,) = rt.rejected()
    assert record.context == {"path": "<stdin>", "line": 2}


def test_shutdown_does_not_wait_for_a_silent_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipe with nothing more to read (its writer still open) cannot hold the runtime up."""
    read_fd, write_fd = os.pipe()
    with open(read_fd, "rb", buffering=0) as raw, open(write_fd, "wb", buffering=0) as pipe:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(raw)))
        pipe.write(lines({"agent": "a", "event": "tick"}))
        unblock = threading.Timer(10, pipe.write, [b"\n"])  # a hang becomes a failure
        unblock.start()

        async def main() -> engine.Runtime:
            async with engine.open_runtime(receptors=[reader()]) as rt:
                rt.spawn(REC, "a", data=[])
                await until(lambda: rt.statistics().processed == 1)
                # leaving now cancels the receptor while its thread waits on the pipe
            return rt

        started = time.monotonic()
        rt = trio.run(main)
        elapsed = time.monotonic() - started
        unblock.cancel()
        pipe.write(b"\n")  # let the abandoned thread's read return
        unblock.join()
    assert elapsed < 5
    assert rt.data("a") == [("tick", None, 1)]


def test_a_full_mailbox_slows_the_reader_instead_of_dropping(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(lines(*({"agent": "a", "event": "tick", "payload": i} for i in range(20))))
    source = reader(path=str(path))

    async def main() -> engine.Runtime:
        async with engine.open_runtime(receptors=[source]) as rt:
            rt.spawn(REC, "a", data=[], capacity=2)
            rt.pause("a")
            await until(lambda: len(rt.queued("a")) == 2)
            await trio.sleep(0.2)
            assert len(rt.queued("a")) == 2  # the reader waits for room
            assert rt.rejected() == []
            assert rt.statistics("a").dropped == 0
            rt.resume("a")
            await until(lambda: rt.statistics("a").processed == 20)
            return rt

    rt = trio.run(main)
    assert [payload for _, payload, _ in rt.data("a")] == list(range(20))
    assert rt.dead_letters() == []


def test_follow_reads_what_is_appended_waits_for_whole_lines_and_restarts_on_truncate(
    tmp_path: Path,
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(lines({"agent": "a", "event": "tick", "payload": 1}))
    source = reader(path=str(path), follow=True, poll_interval=0.01)

    def payloads(rt: engine.Runtime) -> list[Any]:
        return [p for _, p, _ in rt.data("a")]

    async def main() -> None:
        async with engine.open_runtime(receptors=[source]) as rt:
            rt.spawn(REC, "a", data=[])
            await until(lambda: payloads(rt) == [1])
            with path.open("ab") as f:
                f.write(b'{"agent": "a", "event": "tick", "pay')
            await trio.sleep(0.1)
            assert payloads(rt) == [1]  # half a line: not read as a line yet
            with path.open("ab") as f:
                f.write(b'load": 2}\n' + lines({"agent": "a", "event": "tick", "payload": 3}))
            await until(lambda: payloads(rt) == [1, 2, 3])
            path.write_bytes(lines({"agent": "q", "event": "tick"}))  # truncated and rewritten
            await until(lambda: bool(rt.rejected()))
            (record,) = rt.rejected()
            assert record.context == {"path": str(path), "line": 1}
            assert rt.receptor_failures() == []  # still following

    trio.run(main)


def make_batches(payloads: list[Any]) -> list[engine.OutputBatch]:
    batches: list[engine.OutputBatch] = []
    rt = engine.Runtime(on_output=batches.append)
    rt.spawn(ECHO, "e")
    rt.spawn(ECHO, ("tuple", 1))
    for payload in payloads:
        rt.send_nowait("e", "say", payload)
    rt.send_nowait("e", "ping")
    rt.send_nowait(("tuple", 1), "ping")
    rt.run_until_idle()
    return batches


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


def test_writer_writes_outputs_as_json_and_the_rest_as_repr(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    cycle: list[Any] = []
    cycle.append(cycle)
    payloads = [
        "text",
        42,
        ("a", 1),
        {"k": [1, None, True]},
        Opaque(),
        {"nested": Opaque()},
        {(1, 2): "tuple key"},
        math.nan,
        cycle,
    ]
    w = writer(path=str(out))
    for batch in make_batches(payloads):
        w.deliver(batch)  # flush="batch": readable at once
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert got == [
        {"agent": "e", "output": "text"},
        {"agent": "e", "output": 42},
        {"agent": "e", "output": ["a", 1]},
        {"agent": "e", "output": {"k": [1, None, True]}},
        {"agent": "e", "output": "<opaque>"},
        {"agent": "e", "output": {"nested": "<opaque>"}},
        {"agent": "e", "output": repr({(1, 2): "tuple key"})},
        {"agent": "e", "output": "nan"},
        {"agent": "e", "output": "[[...]]"},
        {"agent": "e", "output": "pong"},
        {"agent": ["tuple", 1], "output": "pong"},
    ]
    trio.run(w.aclose)


def test_writer_flush_policy_modes_and_error_records(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"old": true}\n')
    (batch,) = make_batches(["x"])
    record = engine.plugin_spec.ErrorRecord(
        "src", "JSONDecodeError", "bad", "{x", {"path": "p", "line": 3}
    )

    w = writer(path=str(out), flush="close")  # mode="append" by default
    trio.run(w.aopen)
    w.deliver(batch)
    w.report(record)
    assert out.read_text() == '{"old": true}\n'  # buffered until aclose
    trio.run(w.aclose)
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"old": True},
        {"agent": "e", "output": "x"},
        {"agent": "e", "output": "pong"},
        {"agent": ["tuple", 1], "output": "pong"},
        {
            "error": "JSONDecodeError",
            "message": "bad",
            "source": "src",
            "raw": "{x",
            "path": "p",
            "line": 3,
        },
    ]

    w = writer(path=str(out), mode="truncate", errors=False)
    w.deliver(batch)  # opens the file on first use if aopen was not called
    w.report(record)  # errors=False: not written
    trio.run(w.aclose)
    assert len(out.read_text().splitlines()) == 3


def test_writer_to_stdout_is_flushed_not_closed(capsys: pytest.CaptureFixture[str]) -> None:
    w = writer()  # path defaults to "-"
    (batch,) = make_batches(["hello"])
    w.deliver(batch)
    trio.run(w.aclose)
    assert not sys.stdout.closed
    assert json.loads(capsys.readouterr().out.splitlines()[0]) == {"agent": "e", "output": "hello"}


def test_reader_and_writer_from_an_app_file_with_roles(tmp_path: Path) -> None:
    """In an app file the two roles are separate objects with their own config (``role``)."""
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_bytes(
        lines({"agent": "a", "event": "tick"}, b"oops", {"agent": "a", "event": "tick"})
    )
    app_file = tmp_path / "app.toml"
    app_file.write_text(
        textwrap.dedent(f"""
        [[plugins]]
        name = "jsonl"
        role = "receptor"
        config = {{ path = "{src}" }}
        [[plugins]]
        name = "jsonl"
        role = "effector"
        config = {{ path = "{out}", mode = "truncate" }}
    """)
    )
    receptors, effectors = _cli.build_plugins(load_app(app_file), str(app_file))

    async def main() -> None:
        async with engine.open_runtime(receptors=receptors, effectors=effectors) as rt:
            rt.spawn(REC, "a", data=[])
            await until(lambda: rt.statistics().processed == 2 and bool(rt.rejected()))

    trio.run(main)
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert {"agent": "a", "output": "t"} in got
    assert got.count({"agent": "a", "output": "t"}) == 2
    (error,) = [g for g in got if "error" in g]
    assert error == {
        "error": "JSONDecodeError",
        "message": "Expecting value: line 1 column 1 (char 0)",
        "source": "jsonl",
        "raw": "oops",
        "path": str(src),
        "line": 2,
    }


# -- hostile input and restarts ---------------------------------------------------------------


def test_numbers_python_or_json_cannot_take_are_refused_and_reading_goes_on(
    tmp_path: Path,
) -> None:
    """An integer past Python's 4300-digit conversion limit made ``json.loads`` raise a plain
    ValueError, which crashed the reader; NaN and the infinities are not JSON. Each line is
    refused as ``InvalidNumber`` and the lines after it are read."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        lines(
            b'{"agent": "a", "event": "tick", "payload": ' + b"9" * 5000 + b"}",
            b'{"agent": "a", "event": "tick", "payload": -' + b"1" * 4301 + b"}",
            {"agent": "a", "event": "tick", "payload": 1},
            b'{"agent": "a", "event": "tick", "payload": NaN}',
            b'{"agent": "a", "event": "tick", "payload": [Infinity]}',
            b'{"agent": "a", "event": "tick", "payload": -Infinity}',
            b'{"agent": "a", "event": "tick", "payload": 1e999}',
            b'{"agent": ' + b"7" * 4400 + b', "event": "tick"}',
            b'{"agent": "a", "event": "tick", "payload": ' + b"8" * 4300 + b"}",  # the limit
        )
    )
    rt = run_reader(
        reader(path=str(path)),
        ["a"],
        lambda rt: rt.statistics().processed >= 2 and len(rt.rejected()) >= 7,
    )
    assert rt.data("a") == [("tick", 1, 1), ("tick", int("8" * 4300), 1)]
    got = [(r.error, r.context["line"]) for r in rt.rejected()]
    assert got == [("InvalidNumber", n) for n in (1, 2, 4, 5, 6, 7, 8)]
    by_line = {r.context["line"]: r for r in rt.rejected()}
    assert "5000 digits" in by_line[1].message
    assert "NaN" in by_line[4].message
    assert "Infinity" in by_line[5].message
    assert all(len(r.message) < 200 and r.raw is not None for r in rt.rejected())
    assert rt.receptor_failures() == []


class ListSink:
    """An ``EventSink`` without a runtime; ``fail_on`` payloads raise once each, as a lost
    resource or a bug would, so that the reader fails in the middle of its input."""

    name = "jsonl"

    def __init__(self, *fail_on: Any) -> None:
        self.sent: list[Any] = []
        self.rejected: list[engine.plugin_spec.ErrorRecord] = []
        self.fail_on = set(fail_on)

    def send_nowait(
        self, agent_id: Any, event: Any, payload: Any = None, priority: int = 1
    ) -> None:
        if payload in self.fail_on:
            self.fail_on.discard(payload)
            raise RuntimeError(f"failed on {payload}")
        self.sent.append(payload)

    async def send(self, agent_id: Any, event: Any, payload: Any = None, priority: int = 1) -> None:
        await trio.lowlevel.checkpoint()
        self.send_nowait(agent_id, event, payload, priority)

    def reject(self, record: engine.plugin_spec.ErrorRecord) -> None:
        self.rejected.append(record)


def ticks(*payloads: Any) -> bytes:
    return lines(*({"agent": "a", "event": "tick", "payload": p} for p in payloads))


def test_a_restarted_reader_goes_on_where_it_stopped_under_the_runtime(tmp_path: Path) -> None:
    """The runtime restarts a failed receptor by calling ``run`` again on the same object: it
    used to read the file from the top (earlier events twice, later ones never once the
    restarts ran out). The line being sent when it failed is not sent again (at most once per
    line) and is reported as ``Interrupted``."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(ticks(1, 2, 3, 4, 5, 6))
    inner = reader(path=str(path))

    finished = trio.Event()

    class FailsOnceOn3:
        async def run(self, sink: Any) -> None:
            await inner.run(Failing(sink))
            finished.set()

    class Failing:
        failed = False

        def __init__(self, sink: Any) -> None:
            self.sink = sink
            self.name = sink.name
            self.reject = sink.reject
            self.send_nowait = sink.send_nowait

        async def send(
            self, agent: Any, event: Any, payload: Any = None, priority: int = 1
        ) -> None:
            if payload == 3 and not Failing.failed:
                Failing.failed = True
                raise RuntimeError("lost the connection to somewhere")
            await self.sink.send(agent, event, payload, priority)

    plugin = engine.Plugin(FailsOnceOn3(), "jsonl", engine.RestartPolicy(backoff=0))

    async def main() -> engine.Runtime:
        async with engine.open_runtime(receptors=[plugin]) as rt:
            rt.spawn(REC, "a", data=[])
            with trio.fail_after(5):
                await finished.wait()  # at the end of the file
                await rt.wait_until_idle()
        return rt

    rt = trio.run(main)
    assert [p for _, p, _ in rt.data("a")] == [1, 2, 4, 5, 6]
    ((failure,),) = [rt.receptor_failures()]
    assert (failure.plugin, failure.action) == ("jsonl", "restart")
    (lost,) = rt.rejected()
    assert (lost.error, lost.context) == ("Interrupted", {"path": str(path), "line": 3})
    assert lost.raw == '{"agent": "a", "event": "tick", "payload": 3}'


def test_a_restarted_reader_keeps_its_place_in_a_file_across_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails in several places (one in the middle of a read chunk, one across a partial line
    and one on the last line): every line is handled once, in order, and the line numbers go
    on."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(ticks(*range(200)) + b'{"agent": "a", "event": "tick", "payload": 200}')
    r = reader(path=str(path), max_line=100)
    monkeypatch.setattr(sys.modules[type(r).__module__], "CHUNK", 1000)  # lines cut by reads
    sink = ListSink(17, 150, 200)

    async def main() -> None:
        for _ in range(3):
            with pytest.raises(RuntimeError):
                await r.run(sink)
        await r.run(sink)

    trio.run(main)
    assert sink.sent == [p for p in range(200) if p not in (17, 150)]
    assert [(e.error, e.context["line"]) for e in sink.rejected] == [
        ("Interrupted", 18),
        ("Interrupted", 151),
        ("Interrupted", 201),
    ]


def test_a_reader_run_again_reads_only_what_was_appended_or_a_new_file_from_the_top(
    tmp_path: Path,
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(ticks(1, 2))
    r, sink = reader(path=str(path)), ListSink()
    trio.run(r.run, sink)
    with path.open("ab") as f:
        f.write(ticks(3))
    trio.run(r.run, sink)
    assert sink.sent == [1, 2, 3]
    path.write_bytes(ticks(4))  # truncated and rewritten: shorter than where it stopped
    trio.run(r.run, sink)
    replacement = tmp_path / "new.jsonl"
    replacement.write_bytes(ticks(5, 6, 7, 8, 9))
    replacement.replace(path)  # another file at the same path, longer than the old one
    trio.run(r.run, sink)
    assert sink.sent == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert sink.rejected == []


def test_a_restarted_stdin_reader_goes_on_with_the_next_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """stdin cannot be read again: what was read before the failure is kept by the reader."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(ticks(1, 2, 3, 4))))
    r, sink = reader(), ListSink(2)

    async def main() -> None:
        with pytest.raises(RuntimeError):
            await r.run(sink)
        await r.run(sink)

    trio.run(main)
    assert sink.sent == [1, 3, 4]
    ((error, context),) = [(e.error, e.context) for e in sink.rejected]
    assert (error, context) == ("Interrupted", {"path": "<stdin>", "line": 2})


def test_an_output_without_a_json_form_or_a_repr_is_written_as_its_type(tmp_path: Path) -> None:
    """An integer past Python's digit limit has neither (``str`` and ``repr`` raise), nor has
    an object whose ``__repr__`` raises: the batch is still written, not lost."""

    class NoRepr:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    out = tmp_path / "out.jsonl"
    w = writer(path=str(out))
    for batch in make_batches([10**5000, NoRepr(), "after"]):
        w.deliver(batch)
    trio.run(w.aclose)
    got = [json.loads(line)["output"] for line in out.read_text().splitlines()]
    assert got[:3] == ["<int>", "<NoRepr>", "after"]
