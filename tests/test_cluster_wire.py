"""The cluster's data plane (``engine.cluster._wire``) without Ray: frames round-trip in
pieces of any size, and a peer without the cluster's key, an oversized or malformed frame, or
a stream cut mid-frame is refused before anything more is read."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import trio
import trio.testing

from engine.cluster import _wire

KEY = bytes(range(32))


def read_all(data: bytes, step: int | None = None) -> Any:
    """What a ``Reader`` makes of ``data`` (delivered ``step`` bytes at a time)."""

    async def main() -> Any:
        send, receive = trio.testing.memory_stream_pair()
        reader = _wire.Reader(receive)

        async def feed() -> None:
            size = step or len(data) or 1
            for i in range(0, len(data), size):
                await send.send_all(data[i : i + size])
            await send.aclose()

        out: list[Any] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            try:
                out.append(await reader.hello(KEY))
                while True:
                    out.append(await reader.batch())
            except Exception as exc:
                out.append(exc)
        return out

    return trio.run(main)


def header(seq: int, whole: bool, sizes: list[int]) -> Any:
    return (3, "inc", "to", seq, 1.5, 2, whole, sizes)


def test_batches_round_trip_whatever_the_chunking() -> None:
    small = pickle.dumps([("m", "a", "hop", 1, 1, 0)])
    big = b"x" * (_wire.JOIN_BELOW + 10)  # written as separate pieces
    items = [b"one", b"", b"three"]
    data = _wire.hello(KEY, 3)
    for pieces in (
        _wire.frame(header(0, True, [len(small)]), [small]),
        _wire.frame(header(1, True, [len(big)]), [big]),
        _wire.frame(header(2, False, [len(i) for i in items]), items),
        _wire.frame(header(3, False, [3]), [b"one"]),  # one item, not a whole batch
    ):
        data += b"".join(pieces)
    assert len(_wire.frame(header(1, True, [len(big)]), [big])) == 3  # length, header, part
    out = read_all(data[:2000], 1)  # byte by byte: the hello and the first frame
    assert out[:2] == [3, (header(0, True, [len(small)]), small)]
    assert isinstance(out[-1], EOFError)
    for step in (None, 7, 65536):
        out = read_all(data, step)
        assert out[0] == 3
        assert out[1] == (header(0, True, [len(small)]), small)
        assert out[2] == (header(1, True, [len(big)]), big)
        assert out[3] == (header(2, False, [3, 0, 5]), items)
        assert out[4] == (header(3, False, [3]), [b"one"])
        assert isinstance(out[5], EOFError)  # the stream ended between frames


def test_a_peer_without_the_key_is_refused_first() -> None:
    frame = b"".join(_wire.frame(header(0, True, [1]), [b"x"]))
    out = read_all(_wire.hello(b"k" * 32, 3) + frame)
    assert len(out) == 1
    assert isinstance(out[0], _wire.WireError)
    assert "key" in str(out[0])


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (_wire.LENGTH.pack(_wire.MAX_HEADER + 1), "header"),
        (_wire.LENGTH.pack(2**63), "header"),
        (b"".join(_wire.frame((1, 2), [])), "malformed"),  # type: ignore[arg-type]
        (b"".join(_wire.frame(header(0, True, [_wire.MAX_PART + 1]), [])), "out of bounds"),
        (b"".join(_wire.frame(header(0, True, [-1]), [])), "out of bounds"),
        (b"".join(_wire.frame(header(0, True, [1, 1]), [b"a", b"b"])), "more than one part"),
    ],
)
def test_oversized_and_malformed_frames_are_refused(data: bytes, says: str) -> None:
    out = read_all(_wire.hello(KEY, 1) + data)
    assert out[0] == 1
    assert isinstance(out[1], _wire.WireError)
    assert says in str(out[1])


def test_a_stream_cut_mid_frame_ends_with_eof() -> None:
    whole = b"".join(_wire.frame(header(0, True, [100]), [b"y" * 100]))
    for cut in (3, 10, len(whole) - 1):
        out = read_all(_wire.hello(KEY, 1) + whole[:cut])
        assert out[0] == 1
        assert isinstance(out[1], EOFError)
    out = read_all(_wire.hello(KEY, 1)[:20])  # even inside the hello
    assert isinstance(out[0], EOFError)


def test_the_shard_actor_has_no_coroutine_methods() -> None:
    """Ray makes an actor whose class has a coroutine method an asyncio actor: every call on
    one event loop thread, where a request waiting for its answer stalls all the others. The
    shard's coroutines (its data plane's among them) are module functions."""
    import inspect

    from engine.cluster._actors import Shard

    coroutines = [
        name for name, fn in inspect.getmembers(Shard) if inspect.iscoroutinefunction(fn)
    ]
    assert coroutines == []


class FakeHost:
    """What ``_serve`` uses of a shard: its key, its count of strangers, its failures and
    its ``receive``."""

    def __init__(self) -> None:
        self.key = KEY
        self._strangers = 0
        self.failures: list[tuple[str, Any, BaseException]] = []
        self.received: list[tuple[Any, ...]] = []

    def fail(self, what: str, about: Any, error: BaseException) -> None:
        self.failures.append((what, about, error))

    def receive(self, *args: Any) -> None:
        if args[3] == 1:
            raise RuntimeError("a bug in applying")
        self.received.append(args)


def test_a_silent_connection_is_closed_after_the_hello_time() -> None:
    from engine.cluster import _shard

    host = FakeHost()

    async def main() -> None:
        _client, server = trio.testing.memory_stream_pair()  # (a client that never writes)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_shard._serve, host, server)
            await trio.sleep(_shard.HELLO_WITHIN - 1)
            assert host._strangers == 1
            assert host.failures == []
            await trio.sleep(2)
            assert host._strangers == 0
        ((_, _, error),) = host.failures
        assert isinstance(error, _wire.WireError)
        assert "present the key" in str(error)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_batch_that_fails_to_apply_costs_only_itself() -> None:
    from engine.cluster import _shard

    host = FakeHost()
    frames = [_wire.frame((2, "i", "t", seq, 0.0, 1, True, [1]), [b"x"]) for seq in range(3)]

    async def main() -> None:
        client, server = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_shard._serve, host, server)
            await client.send_all(_wire.hello(KEY, 2) + b"".join(b"".join(f) for f in frames))
            await client.aclose()

    trio.run(main)
    assert [args[3] for args in host.received] == [0, 2]  # seq 1 raised; 2 still came
    assert [what for what, _, _ in host.failures] == ["a batch from shard 2"]
