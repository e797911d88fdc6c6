"""The public surface: everything is exported once, and public classes are final."""

from __future__ import annotations

import ast
import enum
import inspect
import pathlib

import pytest

import engine
from engine import hotpath as _hotpath


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


PUBLIC_API = {
    "AgentBusyError", "AgentContext", "AgentExistsError", "AgentNotFoundError", "AgentRef",
    "AgentStatistics", "AgentStatus", "AgentStoppedError", "CancelTimer", "ConfigError",
    "DeadLetter", "DeadLetterReason", "EffectorFailure", "EngineError", "Event", "EventTimeout",
    "Gap", "HandlerError", "Instrument", "InstrumentFailure", "InvalidArgumentError",
    "InvalidTransitionError", "LatencyRing", "LatencySummary", "Machine",
    "MachineDefinitionError", "MachineStatistics", "MailboxFullError", "NextEvent",
    "OutputBatch", "OverflowPolicy", "Plugin", "PluginFailedError", "PluginLoadError",
    "PluginValidationError", "Postpone", "Priority", "ReceptorFailure", "Reply",
    "RestartPolicy", "Runtime", "RuntimeBusyError", "RuntimeNotRunningError", "RuntimePortal",
    "RuntimeStatistics", "Send", "StateTimeout", "Step", "StoreError", "Subscription",
    "RecordBatch", "RecordSubscription", "Divergence", "ReplayReport", "replay",
    "Supervision", "Timer", "Transition", "USE_EXTENSIONS", "UnknownEventError",
    "UnknownStateError", "Work", "open_runtime",
    "UpgradeError", "UpgradeReport",
    "Limits", "Tenant", "TenantBusyError", "TenantExistsError", "TenantLimitError",
    "TenantNotFoundError", "TenantStatistics", "TurnDeadlineError",
}  # fmt: skip
"""What ``engine`` exported before the subpackage layout; it may grow, never shrink."""


def test_the_public_api_survives_the_layout() -> None:
    names = {n for n in public_names() if not inspect.ismodule(getattr(engine, n))}
    assert names >= PUBLIC_API, sorted(PUBLIC_API - names)
    import engine.plugin_spec as spec

    assert {"Effector", "ErrorRecord", "EventSink", "NoConfig", "Receptor"} <= set(dir(spec))


# The layers, lowest first: a module may import only from its own layer or lower ones.
LAYERS = ["core", "hotpath", "runtime", "store", "observe", "environment", "cli"]


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except what sits under ``if TYPE_CHECKING:`` (annotations may
    name a higher layer's types; running code may not import it)."""
    out: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test).endswith("TYPE_CHECKING"):
                stack.extend(child.orelse)
                continue
            stack.append(child)
    return out


def _engine_imports(path: pathlib.Path, package: list[str]) -> set[str]:
    """The engine subpackages a module imports at run time (relative or absolute, lazy ones
    included; imports for type checking only are not dependencies)."""
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                parts = base + (node.module.split(".") if node.module else [])
                names = [parts] if node.module else [[*parts, a.name] for a in node.names]
            elif node.module and node.module.split(".")[0] == "engine":
                names = [node.module.split(".")]
            else:
                continue
        elif isinstance(node, ast.Import):
            names = [a.name.split(".") for a in node.names if a.name.split(".")[0] == "engine"]
        else:
            continue
        for parts in names:
            if len(parts) > 1 and parts[1] in LAYERS:
                found.add(parts[1])
    return found


def test_layers_import_only_downward() -> None:
    root = pathlib.Path(engine.__file__).parent
    for layer in LAYERS:
        folder = root / layer
        if not folder.is_dir():
            continue
        for path in folder.rglob("*.py"):
            package = ["engine", layer, *path.relative_to(folder).parent.parts]
            for used in _engine_imports(path, package):
                assert LAYERS.index(used) <= LAYERS.index(layer), (
                    f"{path.relative_to(root)} ({layer}) imports engine.{used}, a higher layer"
                )


def test_every_layer_states_its_theory_of_operation() -> None:
    root = pathlib.Path(engine.__file__).parent
    for layer in LAYERS:
        if (root / layer).is_dir():
            doc = ast.get_docstring(ast.parse((root / layer / "__init__.py").read_text()))
            assert doc, layer
            assert len(doc) > 200, layer
