"""examples/chat.py: the chat agent and its tool agent, replaying the shipped cassette on
virtual time, live against the tests' model server (recording a cassette), and that
recording replayed."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "chat.py"
_spec = importlib.util.spec_from_file_location("chat_example", SCRIPT)
assert _spec is not None
assert _spec.loader is not None
chat: Any = importlib.util.module_from_spec(_spec)
sys.modules["chat_example"] = chat
_spec.loader.exec_module(chat)

TRANSCRIPT = """\
you> Hello! Who are you?
bot> echo: Hello! Who are you?
you> What is the weather in Oslo today?
bot> echo: What is the weather in Oslo today?
     [weather('What is the weather in Oslo today?') -> Oslo: 4 °C, light rain]
bot> echo: result: Oslo: 4 °C, light rain
"""


def run(*argv: str) -> tuple[str, list[str]]:
    out = io.StringIO()
    turns = chat.main(list(argv), out=out)
    return out.getvalue(), turns


def test_the_shipped_cassette_replays_offline() -> None:
    text, turns = run("--fast")
    assert text == TRANSCRIPT
    assert turns == ["end_turn", "end_turn"]


def test_a_turn_the_cassette_lacks_is_a_clear_error() -> None:
    text, turns = run("--fast", "Something nobody asked before")
    assert turns == ["no_recording"]
    assert "[no_recording: request 'chat:1'" in text
    assert "Something nobody asked before" in text


def test_live_against_a_server_then_replayed(llm_server: str, tmp_path: Path) -> None:
    url = f"{llm_server}/s/delay=0.005,tool=weather,tool_if=weather,tag=example/v1"
    cassette = tmp_path / "chat.jsonl"
    live, turns = run("--url", url, "--record", str(cassette))
    assert live == TRANSCRIPT
    assert turns == ["end_turn", "end_turn"]
    replayed, _ = run("--fast", "--cassette", str(cassette))
    assert replayed == live


@pytest.mark.parametrize("shape", ["city", "list"])
def test_a_tool_called_with_other_arguments_answers_with_an_error(
    shape: str, llm_server: str
) -> None:
    """A live model may call the tool with arguments of another shape: the tool answers
    with an error text the model sees, and the turn ends (the example hung: a KeyError in
    the chat agent, an AttributeError in the tools agent, and turn_done never set)."""
    switches = f"delay=0.005,tool=weather,tool_if=weather,tool_args={shape},tag=example-{shape}"
    out = io.StringIO()
    llm = chat.LLM(chat.LLMConfig(url=f"{llm_server}/s/{switches}/v1"))
    console = chat.Console(out)

    async def bounded() -> None:
        with trio.fail_after(20):
            await chat.converse(llm, console, ["What is the weather in Oslo today?"])

    trio.run(bounded)
    assert console.turns == ["end_turn"]
    text = out.getvalue()
    assert '-> error: the weather tool takes {"query": "<a city>"}' in text
    assert "bot> echo: result: error:" in text
