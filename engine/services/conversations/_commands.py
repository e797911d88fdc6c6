"""The commands of ``ConversationRuntime.request``, one function each, and their checks.

Theory of operation: a command first checks all of its data (a mapping of known keys with
values of the right types and sizes) and raises ``InvalidArgumentError`` before it changes
anything; then it does its work through the engine: tenants for containers, spawn /
hibernate / wake / terminate for images and their agents, ``request`` for what an image's
agent must do itself (take a user message, change its definition). What goes to the store
is written before memory changes (a failed write changes nothing). A message the agent must
take carries the command's deadline: past it, the agent drops it, so a command that timed
out is withdrawn, never done later. Each returns the response's data as a plain dict.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import engine

from ._checks import container_id, deadline, fields, image_config, image_of, text
from ._images import forget_container, new_image_id, new_session_id, write_container
from ._machine import CONVERSATION, STOPPED, agent_id_of, new_image
from ._values import MAX_WAITING

if TYPE_CHECKING:
    from ._runtime import ConversationRuntime

Command = Callable[["ConversationRuntime", Mapping[str, Any], str], Awaitable[dict[str, Any]]]


async def container_create(
    crt: ConversationRuntime, data: Mapping[str, Any], rid: str
) -> dict[str, Any]:
    cid = container_id(crt, fields(data, ("container_id",))["container_id"], exists=False)
    if cid in crt.container_ids():
        return {"container_id": cid, "created": False}
    write_container(crt.store, cid)  # first: a tenant the store lacks is lost on reopen
    try:
        crt.engine.add_tenant(cid)
    except BaseException:
        forget_container(crt.store, cid)
        raise
    crt.emit("container_created", {"container_id": cid}, container_id=cid, correlation_id=rid)
    return {"container_id": cid, "created": True}


async def container_get(
    crt: ConversationRuntime, data: Mapping[str, Any], rid: str
) -> dict[str, Any]:
    cid = container_id(crt, fields(data, ("container_id",))["container_id"], exists=False)
    return {"container_id": cid, "exists": cid in crt.container_ids()}


async def container_list(
    crt: ConversationRuntime, data: Mapping[str, Any], rid: str
) -> dict[str, Any]:
    fields(data, ())
    return {"container_ids": crt.container_ids()}


async def image_create(
    crt: ConversationRuntime, data: Mapping[str, Any], rid: str
) -> dict[str, Any]:
    given = fields(data, ("container_id",), ("config",))
    cid = container_id(crt, given["container_id"])
    config = image_config(given.get("config"), partial=False)
    image_id, session = new_image_id(), new_session_id()
    body = new_image(
        cid, session, config["name"], config.get("description", ""), config.get("system_prompt", "")
    )
    crt.engine.spawn(CONVERSATION, image_id, data=body, tenant=cid)
    try:
        crt.engine.hibernate(image_id)  # offline until it runs: its record is in the store now
    except BaseException:
        crt.engine.terminate(image_id)
        raise
    context = {
        "container_id": cid,
        "image_id": image_id,
        "session_id": session,
        "correlation_id": rid,
    }
    crt.emit("image_created", {"image_id": image_id, "name": config["name"]}, **context)
    crt.emit("session_created", {"session_id": session, "image_id": image_id}, **context)
    return {"record": crt.images.record(image_id)}


async def image_run(crt: ConversationRuntime, data: Mapping[str, Any], rid: str) -> dict[str, Any]:
    image_id = image_of(crt, fields(data, ("image_id",)))
    agent_id, reused = await crt.run_image(image_id, rid)
    return {"image_id": image_id, "agent_id": agent_id, "reused": reused}


async def image_stop(crt: ConversationRuntime, data: Mapping[str, Any], rid: str) -> dict[str, Any]:
    image_id = image_of(crt, fields(data, ("image_id",)))
    stopped = await crt.stop_image(image_id, rid)
    return {"image_id": image_id, "stopped": stopped}


async def image_update(
    crt: ConversationRuntime, data: Mapping[str, Any], rid: str
) -> dict[str, Any]:
    given = fields(data, ("image_id", "updates"))
    image_id = image_of(crt, given)
    updates = image_config(given["updates"], partial=True)
    if "name" in updates and not updates["name"]:
        raise engine.InvalidArgumentError("name is empty")
    woken = crt.engine.wake(image_id)
    try:
        await crt.engine.request(image_id, "update", (updates, deadline()))
    finally:  # the update is withdrawn if this timed out (the agent drops it past its deadline)
        if woken:
            crt.rest(image_id)
    record = crt.images.record(image_id)
    crt.emit(
        "image_updated", {"image_id": image_id, "updates": updates}, **crt.scope(image_id, rid)
    )
    return {"record": record}


async def image_list(crt: ConversationRuntime, data: Mapping[str, Any], rid: str) -> dict[str, Any]:
    given = fields(data, (), ("container_id",))
    cid = container_id(crt, given["container_id"]) if "container_id" in given else None
    records = [crt.images.record(i) for i in crt.images.ids()]
    return {"records": [r for r in records if cid is None or r.container_id == cid]}


async def image_get(crt: ConversationRuntime, data: Mapping[str, Any], rid: str) -> dict[str, Any]:
    image_id = image_of(crt, fields(data, ("image_id",)))
    return {"record": crt.images.record(image_id)}


async def image_delete(
    crt: ConversationRuntime, data: Mapping[str, Any], rid: str
) -> dict[str, Any]:
    image_id = image_of(crt, fields(data, ("image_id",)))
    await crt.delete_image(image_id, rid)
    return {"image_id": image_id}


async def image_messages(
    crt: ConversationRuntime, data: Mapping[str, Any], rid: str
) -> dict[str, Any]:
    image_id = image_of(crt, fields(data, ("image_id",)))
    messages = [dict(m) for m in crt.images.data(image_id)["messages"]]
    return {"image_id": image_id, "messages": messages}


async def message_send(
    crt: ConversationRuntime, data: Mapping[str, Any], rid: str
) -> dict[str, Any]:
    given = fields(data, ("content",), ("image_id", "agent_id"))
    content = text(given["content"], "content")
    image_id = image_of(crt, given)
    agent_id, _ = await crt.run_image(image_id, rid)
    rt = crt.engine
    if rt.state(image_id) != "idle":  # mid-turn: it waits; so many may wait, no more
        waiting = sum(1 for m in (*rt.queued(image_id), *rt.postponed(image_id)) if m[1] == "user")
        if waiting >= MAX_WAITING:
            raise engine.AgentBusyError(
                agent_id, f"holds {waiting} messages for its next turns already"
            )
    reply = await rt.request(image_id, "user", (content, rid, deadline()))
    if reply == STOPPED:
        raise engine.AgentStoppedError(agent_id, "was stopped before it took the message")
    return {"image_id": image_id, "agent_id": agent_id, "message_id": reply["id"]}


async def agent_interrupt(
    crt: ConversationRuntime, data: Mapping[str, Any], rid: str
) -> dict[str, Any]:
    given = fields(data, (), ("image_id", "agent_id"))
    image_id = image_of(crt, given)
    if not crt.images.online(image_id):
        raise engine.AgentNotFoundError(given.get("agent_id", image_id))
    busy = crt.engine.state(image_id) != "idle"
    if busy:
        crt.interrupt_turn(image_id)
    agent_id = agent_id_of(image_id, crt.images.data(image_id)["run"])
    return {"image_id": image_id, "agent_id": agent_id, "interrupted": busy}


def agent_info(crt: ConversationRuntime, image_id: str) -> dict[str, Any]:
    data = crt.images.data(image_id)
    return {
        "agent_id": agent_id_of(image_id, data["run"]),
        "image_id": image_id,
        "container_id": data["container"],
        "session_id": data["session"],
        "name": data["name"],
        "state": crt.engine.state(image_id),
    }


async def agent_get(crt: ConversationRuntime, data: Mapping[str, Any], rid: str) -> dict[str, Any]:
    image_id, _ = crt.images.agent(fields(data, ("agent_id",))["agent_id"])
    return agent_info(crt, image_id)


async def agent_list(crt: ConversationRuntime, data: Mapping[str, Any], rid: str) -> dict[str, Any]:
    given = fields(data, (), ("container_id",))
    cid = container_id(crt, given["container_id"]) if "container_id" in given else None
    agents = [agent_info(crt, i) for i in crt.images.ids(online_only=True)]
    return {"agents": [a for a in agents if cid is None or a["container_id"] == cid]}


async def agent_destroy(
    crt: ConversationRuntime, data: Mapping[str, Any], rid: str
) -> dict[str, Any]:
    agent_id = fields(data, ("agent_id",))["agent_id"]
    image_id, _ = crt.images.agent(agent_id)
    await crt.stop_image(image_id, rid)
    return {"agent_id": agent_id, "image_id": image_id, "success": True}


async def agent_destroy_all(
    crt: ConversationRuntime, data: Mapping[str, Any], rid: str
) -> dict[str, Any]:
    given = fields(data, (), ("container_id",))
    cid = container_id(crt, given["container_id"]) if "container_id" in given else None
    ids = [
        i for i in crt.images.ids(online_only=True) if cid is None or crt.engine.tenant_of(i) == cid
    ]
    for image_id in ids:
        await crt.stop_image(image_id, rid)
    return {"container_id": cid, "destroyed": len(ids)}


COMMAND_TABLE: dict[str, Command] = {
    f.__name__: f
    for f in (
        container_create,
        container_get,
        container_list,
        image_create,
        image_run,
        image_stop,
        image_update,
        image_list,
        image_get,
        image_delete,
        image_messages,
        message_send,
        agent_interrupt,
        agent_get,
        agent_list,
        agent_destroy,
        agent_destroy_all,
    )
}
