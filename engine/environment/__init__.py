"""The environment: receptors and effectors, their discovery and wiring, and app files.

Theory of operation: a plugin is a distribution with an entry point in ``engine.receptors``
or ``engine.effectors`` naming a factory with a ``Config`` attrs class (the contract is
``_spec``, published as ``engine.plugin_spec``). ``_discovery`` lists entry points without
importing them, loads them (``PluginLoadError`` naming the plugin) and validates the objects
(``PluginValidationError``). ``_config`` structures app files and plugin configs with one
cattrs converter, reporting every bad field at once. ``_wiring`` connects the objects to a
running runtime (effectors behind the output sink, receptors as tasks with an ``EventSink``),
and ``_open`` provides ``open_runtime``, which builds a runtime, its trio host and the wiring
under one nursery. ``_durable`` takes periodic snapshots of a running runtime into a store
(``start_snapshots``) and runs the commit log (``start_commit_log``), capturing on the trio
thread and writing from a worker thread; ``open_runtime(store=..., durability=...)`` starts
either, after restoring agents from the store when asked (``restore=``).
"""

from ._durable import snapshot_now as snapshot_now
from ._durable import start_commit_log as start_commit_log
from ._durable import start_snapshots as start_snapshots
