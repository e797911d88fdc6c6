"""The public surface: everything is exported once, and public classes are final."""

from __future__ import annotations

import enum
import inspect

import pytest

import engine
from engine import _hotpath


def public_names() -> list[str]:
    return [n for n in dir(engine) if not n.startswith("_")]


def test_each_public_object_is_exported_once() -> None:
    objects: dict[int, str] = {}
    for name in public_names():
        obj = getattr(engine, name)
        if isinstance(obj, bool | str | int):
            continue
        assert id(obj) not in objects, f"{name} and {objects[id(obj)]} are the same object"
        objects[id(obj)] = name
        if inspect.isclass(obj):
            assert obj.__name__ == name
            assert obj.__module__.startswith("engine")


SUBCLASSABLE = {"Instrument"}  # a base class for users' instruments


def test_public_classes_are_final() -> None:
    for name in public_names():
        cls = getattr(engine, name)
        if not inspect.isclass(cls) or issubclass(cls, BaseException | enum.Enum):
            continue
        if name in SUBCLASSABLE:
            type("Sub", (cls,), {})  # really subclassable
            continue
        if getattr(cls, "__final__", False):
            continue
        with pytest.raises(TypeError):
            type("Sub", (cls,), {})  # compiled classes refuse subclassing


@pytest.mark.parametrize("name", ["native", "python"])
def test_twin_and_compiled_module_have_the_same_surface(name: str) -> None:
    if name == "native" and _hotpath.NO_EXTENSIONS:
        pytest.skip("ENGINE_NO_EXTENSIONS=1")
    mod = _hotpath.implementation(name)
    for cls_name in ("Dispatcher", "AgentRef", "AgentContext", "Event"):
        twin = getattr(_hotpath.implementation("python"), cls_name)
        ours = getattr(mod, cls_name)
        public = {n for n in dir(twin) if not n.startswith("_")}
        assert public <= set(dir(ours)), (cls_name, public - set(dir(ours)))


def test_exceptions_form_one_tree() -> None:
    for name in public_names():
        obj = getattr(engine, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            assert issubclass(obj, engine.EngineError)
            assert obj.__doc__
            assert "Raised" in obj.__doc__
