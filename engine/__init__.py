"""An embeddable Mealy state-machine engine with a compiled hot path, for trio."""

# General layout (the folder tree is the architecture; arrows point only downward, and each
# subpackage's __init__ states its theory of operation):
#
# cli/          python -m engine run | plugins | top | metrics-plot
# environment/  receptors and effectors: the plugin contract, discovery, wiring, app files,
#               open_runtime (a runtime under trio with its plugins)
# observe/      metrics history, Prometheus, OpenTelemetry, the live view: they read a
#               runtime, never the reverse
# runtime/      Runtime: registry, sending, running, timers, supervision, requests, streams,
#               instruments; the trio host (dispatch task, work, async sends)
# hotpath/      the dispatcher: selector, pure-Python twin, latency rings; the compiled twin
#               is engine._native, built from _native/*.pyx|pxi
# core/         sans-IO Mealy core: machines, actions, value types, the exception tree
#
# Public shims beside this one: engine.plugin_spec, engine.plugin_util, engine.testing.

from .core._actions import CancelTimer as CancelTimer
from .core._actions import EventTimeout as EventTimeout
from .core._actions import NextEvent as NextEvent
from .core._actions import Postpone as Postpone
from .core._actions import Reply as Reply
from .core._actions import Send as Send
from .core._actions import StateTimeout as StateTimeout
from .core._actions import Timer as Timer
from .core._actions import Work as Work
from .core._exceptions import AgentBusyError as AgentBusyError
from .core._exceptions import AgentExistsError as AgentExistsError
from .core._exceptions import AgentNotFoundError as AgentNotFoundError
from .core._exceptions import AgentStoppedError as AgentStoppedError
from .core._exceptions import ConfigError as ConfigError
from .core._exceptions import EngineError as EngineError
from .core._exceptions import HandlerError as HandlerError
from .core._exceptions import InvalidArgumentError as InvalidArgumentError
from .core._exceptions import InvalidTransitionError as InvalidTransitionError
from .core._exceptions import MachineDefinitionError as MachineDefinitionError
from .core._exceptions import MailboxFullError as MailboxFullError
from .core._exceptions import PluginFailedError as PluginFailedError
from .core._exceptions import PluginLoadError as PluginLoadError
from .core._exceptions import PluginValidationError as PluginValidationError
from .core._exceptions import RuntimeBusyError as RuntimeBusyError
from .core._exceptions import RuntimeNotRunningError as RuntimeNotRunningError
from .core._exceptions import StoreError as StoreError
from .core._exceptions import TenantBusyError as TenantBusyError
from .core._exceptions import TenantExistsError as TenantExistsError
from .core._exceptions import TenantLimitError as TenantLimitError
from .core._exceptions import TenantNotFoundError as TenantNotFoundError
from .core._exceptions import TurnDeadlineError as TurnDeadlineError
from .core._exceptions import UnknownEventError as UnknownEventError
from .core._exceptions import UnknownStateError as UnknownStateError
from .core._machine import Machine as Machine
from .core._types import AgentStatus as AgentStatus
from .core._types import DeadLetter as DeadLetter
from .core._types import DeadLetterReason as DeadLetterReason
from .core._types import OutputBatch as OutputBatch
from .core._types import OverflowPolicy as OverflowPolicy
from .core._types import Priority as Priority
from .core._types import Step as Step
from .environment._config import RestartPolicy as RestartPolicy
from .environment._open import open_runtime as open_runtime
from .environment._wiring import EffectorFailure as EffectorFailure
from .environment._wiring import Plugin as Plugin
from .environment._wiring import ReceptorFailure as ReceptorFailure
from .hotpath import USE_EXTENSIONS as USE_EXTENSIONS
from .hotpath import AgentContext as AgentContext
from .hotpath import AgentRef as AgentRef
from .hotpath import Event as Event
from .hotpath._metrics import LatencyRing as LatencyRing
from .hotpath._metrics import LatencySummary as LatencySummary
from .runtime._host import RuntimePortal as RuntimePortal
from .runtime._host import Subscription as Subscription
from .runtime._instruments import Instrument as Instrument
from .runtime._instruments import InstrumentFailure as InstrumentFailure
from .runtime._records import RecordBatch as RecordBatch
from .runtime._records import RecordSubscription as RecordSubscription
from .runtime._replay import Divergence as Divergence
from .runtime._replay import ReplayReport as ReplayReport
from .runtime._replay import replay as replay
from .runtime._ring import Gap as Gap
from .runtime._ring import Transition as Transition
from .runtime._runtime import AgentStatistics as AgentStatistics
from .runtime._runtime import MachineStatistics as MachineStatistics
from .runtime._runtime import Runtime as Runtime
from .runtime._runtime import RuntimeStatistics as RuntimeStatistics
from .runtime._supervision import Supervision as Supervision
from .runtime._tenants import Limits as Limits
from .runtime._tenants import Tenant as Tenant
from .runtime._tenants import TenantStatistics as TenantStatistics
from .runtime._upgrade import UpgradeError as UpgradeError
from .runtime._upgrade import UpgradeReport as UpgradeReport

__version__ = "0.1.0"
