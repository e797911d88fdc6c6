"""Images and containers as the engine keeps them: agents and tenants, records in the store.

Theory of operation: nothing here holds state of its own. A container is a tenant of the
engine runtime, plus one record under the reserved key ``engine:conversations:container:<id>``
so that a reopened store knows its tenants before its agents are restored (agents' readers
skip reserved keys). An image is an agent of the conversation machine: resident, its data is
read in place; hibernated, its data is read from its record in the store with
``engine.store.decode``, without waking it. It is online while an agent runs it (resident,
run, not stopped since); one woken by a read, or left resident by a command that timed out,
is offline. Ids: images are
``img_<hex>``, sessions ``ses_<hex>``, and an image's n-th agent is ``<image id>#<n>``.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

import engine
import engine.store

from ._machine import CONVERSATION, agent_id_of
from ._values import ImageNotFoundError, ImageRecord

CONTAINER_KEY = "engine:conversations:container:"
"""Prefix of the store keys of container records (reserved: agents' readers skip them)."""


def new_image_id() -> str:
    return f"img_{uuid.uuid4().hex[:16]}"


def new_session_id() -> str:
    return f"ses_{uuid.uuid4().hex[:16]}"


def is_image_id(value: object) -> bool:
    return type(value) is str and value.startswith("img_")


def stored_containers(store: engine.store.Store) -> list[tuple[str, float]]:
    """The containers a store holds, ``(id, created_at)``, in creation order."""
    codec = engine.store.Codec()
    found = []
    for record in store.latest():
        if record.agent.startswith(CONTAINER_KEY) and record.record:
            value = codec.unpack(record.record)
            found.append((str(value["container_id"]), float(value["created_at"])))
    return sorted(found, key=lambda item: item[1])


def write_container(store: engine.store.Store, container_id: str) -> None:
    """Keep a container's record (synchronously: one small write)."""
    now = time.time()
    body = engine.store.Codec().pack({"container_id": container_id, "created_at": now})
    store.write([(CONTAINER_KEY + container_id, now, body)])


def forget_container(store: engine.store.Store, container_id: str) -> None:
    """Withdraw a container's record (best effort: a failure here is not raised)."""
    with contextlib.suppress(Exception):
        store.write([(CONTAINER_KEY + container_id, time.time(), engine.store.TOMBSTONE)])


def forget_image(store: engine.store.Store, image_id: str) -> None:
    """A tombstone for a deleted image, so that a reopened store does not bring it back."""
    store.write([(engine.store.agent_key(image_id), time.time(), engine.store.TOMBSTONE)])


class Images:
    """Reads images out of an engine runtime and its store."""

    def __init__(self, rt: engine.Runtime, store: engine.store.Store, codec: Any) -> None:
        self.rt = rt
        self.store = store
        self.codec = codec

    def resident(self, image_id: str) -> bool:
        """In memory (running, or woken by a call without running)."""
        return self.rt.status(image_id) is not engine.AgentStatus.HIBERNATED

    def online(self, image_id: str) -> bool:
        """An agent runs it: resident, run at least once and not stopped since."""
        if not self.resident(image_id):
            return False
        data = self.rt.data(image_id)
        return bool(data["run"]) and not data["stopping"]

    def data(self, image_id: object) -> dict[str, Any]:
        """An image's data, read without waking it.

        Raises:
            ImageNotFoundError: No such image.
        """
        if not is_image_id(image_id) or image_id not in self.rt:
            raise ImageNotFoundError(image_id)
        assert isinstance(image_id, str)
        if self.resident(image_id):
            if self.rt.machine(image_id) is not CONVERSATION:
                raise ImageNotFoundError(image_id)
            data: dict[str, Any] = self.rt.data(image_id)
            return data
        (record,) = self.store.latest([engine.store.agent_key(image_id)])
        snapshot = engine.store.decode(record.record, self.codec, agent=image_id)
        if snapshot.machine != CONVERSATION.name:
            raise ImageNotFoundError(image_id)
        stored: dict[str, Any] = snapshot.data
        return stored

    def record(self, image_id: object) -> ImageRecord:
        """An image's record (``ImageNotFoundError`` if there is none)."""
        data = self.data(image_id)
        assert isinstance(image_id, str)
        online = self.online(image_id)
        return ImageRecord(
            image_id=image_id,
            container_id=data["container"],
            session_id=data["session"],
            name=data["name"],
            description=data["description"],
            system_prompt=data["system_prompt"],
            created_at=data["created_at"],
            updated_at=data["updated_at"],
            messages=len(data["messages"]),
            online=online,
            agent_id=agent_id_of(image_id, data["run"]) if online else None,
        )

    def ids(self, *, online_only: bool = False, resident_only: bool = False) -> list[str]:
        """Ids of every image (or of the online ones, or the resident ones), resident first."""
        resident = [
            i for i in self.rt.agent_ids() if is_image_id(i) and self.rt.machine(i) is CONVERSATION
        ]
        if online_only:
            return [i for i in resident if self.online(i)]
        if resident_only:
            return resident
        return resident + [i for i in self.rt.hibernated_ids() if is_image_id(i)]

    def agent(self, agent_id: object) -> tuple[str, dict[str, Any]]:
        """The image of a running agent and its data.

        Raises:
            AgentNotFoundError: No agent has this id now (a stopped run's id included).
        """
        if type(agent_id) is not str or "#" not in agent_id:
            raise engine.AgentNotFoundError(agent_id)
        image_id = agent_id.rpartition("#")[0]
        if (
            not is_image_id(image_id)
            or image_id not in self.rt
            or not self.resident(image_id)
            or self.rt.machine(image_id) is not CONVERSATION
            or not self.online(image_id)
        ):
            raise engine.AgentNotFoundError(agent_id)
        data = self.data(image_id)
        if agent_id_of(image_id, data["run"]) != agent_id:
            raise engine.AgentNotFoundError(agent_id)
        return image_id, data
