"""The plugin contract (``Receptor``, ``Effector``, ``EventSink``, ``WorkSink``,
``ErrorRecord``), and ``FloatOrInfinity`` for config fields where ``inf`` means "never" (a
plain ``float`` field of a plugin's ``Config`` takes finite numbers only).

A public shim: the contract is defined in ``engine.environment._spec``, whose docstring tells
how plugins are found, loaded, validated and run.
"""

from .environment._config import FloatOrInfinity as FloatOrInfinity
from .environment._spec import EFFECTORS as EFFECTORS
from .environment._spec import RECEPTORS as RECEPTORS
from .environment._spec import Effector as Effector
from .environment._spec import ErrorRecord as ErrorRecord
from .environment._spec import EventSink as EventSink
from .environment._spec import NoConfig as NoConfig
from .environment._spec import Receptor as Receptor
from .environment._spec import WorkSink as WorkSink

__all__ = [
    "EFFECTORS",
    "RECEPTORS",
    "Effector",
    "ErrorRecord",
    "EventSink",
    "FloatOrInfinity",
    "NoConfig",
    "Receptor",
    "WorkSink",
]
