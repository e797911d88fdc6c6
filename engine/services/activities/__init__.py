"""An agent runtime service (create / send / query / subscribe / terminate) on the engine.

Theory of operation: the API of an older agent-runtime design, with the engine doing the
work. ``open_activity_service`` gives an ``ActivityService`` over an engine ``Runtime``
(its own, or a running one it joins). Each service agent is one engine agent of the
service's machine: its state is the agent's data, each activity type (``STATE_CHANGE``,
``COMMAND``, the custom ones registered) is an event of the machine with a handler bound to
it, an activity's priority is the mailbox lane it is queued in, ``get_state`` reads the
engine's status, status stamp and statistics, and ``subscribe`` reads the engine's record
stream. The service adds only what the engine does not keep: each agent's workflow and when
it last entered each status (``_service``). There is no second mailbox, no second copy of
an agent's state and no storage of its own.

Modules: ``_values`` (activities and what is reported), ``_errors`` (this layer's branch of
the exception tree), ``_machine`` (the machine and its handlers), ``_service`` (the service
and the per-agent handle), ``_stream`` (subscriptions), ``_open`` (the factory).
"""

from ._agent import ActivityAgent as ActivityAgent
from ._errors import ActivityAgentExistsError as ActivityAgentExistsError
from ._errors import ActivityAgentNotFoundError as ActivityAgentNotFoundError
from ._errors import ActivityError as ActivityError
from ._errors import ActivityTimeoutError as ActivityTimeoutError
from ._errors import InvalidActivityError as InvalidActivityError
from ._errors import ProcessingError as ProcessingError
from ._errors import UnknownActivityTypeError as UnknownActivityTypeError
from ._errors import UnknownCommandError as UnknownCommandError
from ._open import open_activity_service as open_activity_service
from ._service import ActivityService as ActivityService
from ._stream import ActivityStream as ActivityStream
from ._values import KEEP as KEEP
from ._values import Activity as Activity
from ._values import ActivityAgentState as ActivityAgentState
from ._values import ActivityRecord as ActivityRecord
from ._values import ActivityServiceStatistics as ActivityServiceStatistics
from ._values import ActivityType as ActivityType
from ._values import Outcome as Outcome
from ._values import ProcessingMetrics as ProcessingMetrics
from ._values import StatusTimes as StatusTimes
