"""An embeddable Mealy state-machine engine with a compiled hot path, for trio."""

# General layout:
#
# _machine.py   sans-IO Mealy core: Machine definitions compiled to int32 tables
# _hotpath.py   selects the dispatcher: engine._native (Cython, from _native/) or the twin
# _hotpath_py.py  pure-Python twin of the compiled dispatcher
# _runtime.py   Runtime: agent registry, sending, running, timers, supervision, statistics
# _trio_host.py open_runtime: the dispatch task under trio, async sends, requests, streams
# _actions.py   actions a handler returns (Postpone, NextEvent, timers, Reply, Send, Work)
# _timers.py    one queue for every timer (buckets per deadline), with lazy cancellation
# _ring.py      retention rings for transition records and dead letters
# _supervision.py  resume / restart with backoff / stop
# plugin_spec.py   the plugin contract (Receptor, Effector, EventSink, ErrorRecord)
# _plugins.py   entry-point discovery, loading, validation
# _wiring.py    receptors and effectors attached to a running runtime
# _config.py    attrs configuration structured by one cattrs converter; app files
# _cli.py       python -m engine run | plugins | top
# _metrics.py   latency rings (numpy), per-agent metric records
# _instruments.py  optional observers, indexed by hook
# _types.py     public value types (priorities, statuses, steps, dead letters, batches)
# _exceptions.py  the EngineError tree

from ._actions import CancelTimer as CancelTimer
from ._actions import EventTimeout as EventTimeout
from ._actions import NextEvent as NextEvent
from ._actions import Postpone as Postpone
from ._actions import Reply as Reply
from ._actions import Send as Send
from ._actions import StateTimeout as StateTimeout
from ._actions import Timer as Timer
from ._actions import Work as Work
from ._config import RestartPolicy as RestartPolicy
from ._exceptions import AgentExistsError as AgentExistsError
from ._exceptions import AgentNotFoundError as AgentNotFoundError
from ._exceptions import AgentStoppedError as AgentStoppedError
from ._exceptions import ConfigError as ConfigError
from ._exceptions import EngineError as EngineError
from ._exceptions import HandlerError as HandlerError
from ._exceptions import InvalidArgumentError as InvalidArgumentError
from ._exceptions import InvalidTransitionError as InvalidTransitionError
from ._exceptions import MachineDefinitionError as MachineDefinitionError
from ._exceptions import MailboxFullError as MailboxFullError
from ._exceptions import PluginFailedError as PluginFailedError
from ._exceptions import PluginLoadError as PluginLoadError
from ._exceptions import PluginValidationError as PluginValidationError
from ._exceptions import RuntimeBusyError as RuntimeBusyError
from ._exceptions import RuntimeNotRunningError as RuntimeNotRunningError
from ._exceptions import UnknownEventError as UnknownEventError
from ._exceptions import UnknownStateError as UnknownStateError
from ._hotpath import USE_EXTENSIONS as USE_EXTENSIONS
from ._hotpath import AgentContext as AgentContext
from ._hotpath import AgentRef as AgentRef
from ._hotpath import Event as Event
from ._instruments import Instrument as Instrument
from ._instruments import InstrumentFailure as InstrumentFailure
from ._machine import Machine as Machine
from ._metrics import LatencyRing as LatencyRing
from ._metrics import LatencySummary as LatencySummary
from ._ring import Gap as Gap
from ._ring import Transition as Transition
from ._runtime import AgentStatistics as AgentStatistics
from ._runtime import MachineStatistics as MachineStatistics
from ._runtime import Runtime as Runtime
from ._runtime import RuntimeStatistics as RuntimeStatistics
from ._supervision import Supervision as Supervision
from ._trio_host import RuntimePortal as RuntimePortal
from ._trio_host import Subscription as Subscription
from ._trio_host import open_runtime as open_runtime
from ._types import AgentStatus as AgentStatus
from ._types import DeadLetter as DeadLetter
from ._types import DeadLetterReason as DeadLetterReason
from ._types import OutputBatch as OutputBatch
from ._types import OverflowPolicy as OverflowPolicy
from ._types import Priority as Priority
from ._types import Step as Step
from ._wiring import EffectorFailure as EffectorFailure
from ._wiring import Plugin as Plugin
from ._wiring import ReceptorFailure as ReceptorFailure

__version__ = "0.1.0"
