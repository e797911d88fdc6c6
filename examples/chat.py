"""A chat agent that streams its answers, with tool calls handled by a second agent.

Two Mealy machines. The ``chat`` agent talks to the model through the engine-llm plugin:

    idle --user--> waiting --message_start--> streaming --message_stop--> idle
                                                  |  (stop reason tool_use)
                                                  +--> tooling --tool_result(s)--> waiting

Each ``text_delta`` becomes a ``("print", text)`` output the moment it arrives, and a console
effector writes it; each ``tool_call`` is sent to the ``tools`` agent (a ``Send`` action),
whose answer comes back as ``tool_result`` (postponed while the answer is still streaming);
once every call of a message is answered, the conversation goes back to the model. An
``llm_error`` or an interrupt ends the turn.

By default it runs offline, replaying the shipped cassette (``examples/chat.cassette.jsonl``,
recorded from the tests' model server, an echo model: tests/llm_server.py) with its recorded
timing; ``--fast`` replays on virtual time (``MockClock``). ``--url`` talks to a live
OpenAI-compatible server (or Anthropic's format with ``--api anthropic``; the key comes from
``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY``), and ``--record`` writes a new cassette.

    python examples/chat.py
    python examples/chat.py --fast
    python examples/chat.py --url http://127.0.0.1:8080/v1 --model qwen2.5 --record my.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

import trio
import trio.testing
from engine_llm import (
    EVENTS,
    LLM,
    Cassette,
    LLMConfig,
    LLMError,
    Message,
    MessageStop,
    Request,
    TextDelta,
    Tool,
    ToolCall,
)

import engine
from engine import Postpone, Send, Step

CASSETTE = Path(__file__).with_name("chat.cassette.jsonl")
TURNS = ["Hello! Who are you?", "What is the weather in Oslo today?"]

WEATHER = Tool(
    "weather",
    "The weather in a city today",
    {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
)
FORECASTS = {"oslo": "Oslo: 4 °C, light rain", "rome": "Rome: 18 °C, sunny"}


def chat_machine() -> engine.Machine:
    m = engine.Machine(
        "chat",
        ["idle", "waiting", "streaming", "tooling"],
        "idle",
        [],
        events=["user", "tool_result", *EVENTS],
        unhandled="ignore",  # a late event of an interrupted turn is dropped
    )

    def ask(history: list[Message]) -> tuple[str, Request]:
        return ("llm", Request(tuple(history), tools=(WEATHER,)))

    @m.handler("idle", "user")
    def user(agent: engine.AgentContext, event: engine.Event) -> Step:
        agent.data["history"].append(Message("user", event.payload))
        return Step("waiting", outputs=[ask(agent.data["history"])])

    @m.handler("waiting", "message_start")
    def start(agent: engine.AgentContext, event: engine.Event) -> Step:
        return Step("streaming", outputs=[("print", "bot> ")])

    @m.handler("streaming", "text_delta")
    def delta(agent: engine.AgentContext, event: engine.Event) -> Step:
        piece: TextDelta = event.payload
        return Step(outputs=[("print", piece.text)])

    @m.handler("streaming", "tool_call")
    def tool_call(agent: engine.AgentContext, event: engine.Event) -> Step:
        agent.data["pending"] += 1
        return Step(actions=[Send("tools", "call", (agent.agent_id, event.payload))])

    @m.handler("streaming", "message_stop")
    def stop(agent: engine.AgentContext, event: engine.Event) -> Step:
        done: MessageStop = event.payload
        agent.data["history"].append(Message("assistant", done.text, tool_calls=done.tool_calls))
        if agent.data["pending"]:
            return Step("tooling", outputs=[("print", "\n")])
        return Step("idle", outputs=[("print", "\n"), ("turn_done", done.stop_reason)])

    @m.handler("streaming", "tool_result")
    def early(agent: engine.AgentContext, event: engine.Event) -> Step:
        return Step(actions=[Postpone()])  # answered before the message ended: keep it

    @m.handler("tooling", "tool_result")
    def result(agent: engine.AgentContext, event: engine.Event) -> Step:
        call, answer = event.payload
        agent.data["history"].append(Message("tool", answer, tool_call_id=call.id))
        agent.data["pending"] -= 1
        line = ("print", f"     [{call.name}({_shown(call.arguments)}) -> {answer}]\n")
        if agent.data["pending"]:
            return Step(outputs=[line])
        return Step("waiting", outputs=[line, ask(agent.data["history"])])

    @m.handler("*", "llm_error")
    def failed(agent: engine.AgentContext, event: engine.Event) -> Step:
        error: LLMError = event.payload
        agent.data["pending"] = 0
        text = f"\n[{error.reason}: {error.message}]\n"
        return Step("idle", outputs=[("print", text), ("turn_done", str(error.reason))])

    @m.handler("*", "interrupted")
    def interrupted(agent: engine.AgentContext, event: engine.Event) -> Step:
        agent.data["pending"] = 0
        return Step("idle", outputs=[("print", "\n[interrupted]\n"), ("turn_done", "interrupted")])

    return m


def _query(arguments: Any) -> str | None:
    """The tool's one argument, if the model called it as its schema says."""
    query = arguments.get("query") if isinstance(arguments, dict) else None
    return query if isinstance(query, str) else None


def _shown(arguments: Any) -> str:
    query = _query(arguments)
    return repr(query) if query is not None else json.dumps(arguments)[:80]


def tools_machine() -> engine.Machine:
    m = engine.Machine("tools", ["ready"], "ready", [], events=["call"])

    @m.handler("ready", "call")
    def call(agent: engine.AgentContext, event: engine.Event) -> Step:
        """Always answers (a model may call the tool with any arguments: it is told what
        was wrong, and the chat agent's turn goes on)."""
        reply_to, request = event.payload
        query = _query(request.arguments) if isinstance(request, ToolCall) else None
        if query is None:
            answer = 'error: the weather tool takes {"query": "<a city>"}'
        else:
            found = [text for city, text in FORECASTS.items() if city in query.lower()]
            answer = found[0] if found else "no forecast for that place"
        return Step(actions=[Send(reply_to, "tool_result", (request, answer))])

    return m


CHAT = chat_machine()
TOOLS = tools_machine()


class Console:
    """An effector: writes ``("print", text)`` outputs as they come, and counts finished
    turns (``("turn_done", reason)``)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.turns: list[str] = []
        self.turn_done = trio.Event()

    def deliver(self, batch: engine.OutputBatch) -> None:
        for _, output in batch:
            if output[0] == "print":
                self.out.write(output[1])
                self.out.flush()
            elif output[0] == "turn_done":
                self.turns.append(output[1])
                self.turn_done.set()


async def converse(llm: LLM, console: Console, turns: list[str]) -> engine.Runtime:
    async with engine.open_runtime(receptors=[llm], effectors=[llm, console]) as rt:
        rt.spawn(CHAT, "chat", data={"history": [], "pending": 0})
        rt.spawn(TOOLS, "tools")
        for text in turns:
            console.out.write(f"you> {text}\n")
            console.turn_done = trio.Event()
            await rt.send("chat", "user", text)
            await console.turn_done.wait()
        return rt


def config(args: argparse.Namespace) -> LLMConfig:
    if args.url is None:
        cassette = Cassette(str(args.cassette), "replay", timing=not args.fast)
        return LLMConfig(model=args.model, cassette=cassette)
    record = Cassette(str(args.record), "record") if args.record else None
    return LLMConfig(url=args.url, api=args.api, model=args.model, cassette=record)


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> list[str]:
    """Run the conversation; the finished turns' stop reasons."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a live server's base URL (default: replay the cassette)")
    parser.add_argument("--api", choices=["openai", "anthropic"], default="openai")
    parser.add_argument("--model", default="default")
    parser.add_argument("--record", type=Path, help="with --url: record a cassette here")
    parser.add_argument("--cassette", type=Path, default=CASSETTE, help="the cassette replayed")
    parser.add_argument("--fast", action="store_true", help="replay on virtual time")
    parser.add_argument("turns", nargs="*", help="what the user says (default: two turns)")
    args = parser.parse_args(argv)
    if args.fast and args.url:
        parser.error("--fast replays a cassette; a live server runs on real time")
    llm = LLM(config(args))
    console = Console(out)
    clock = trio.testing.MockClock(autojump_threshold=0) if args.fast else None
    trio.run(converse, llm, console, args.turns or TURNS, clock=clock)
    return console.turns


if __name__ == "__main__":
    main()
