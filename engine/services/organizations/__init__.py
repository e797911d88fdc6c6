"""An organization runtime manager (the older design's ``OrganizationRuntimeManager``) as a
thin layer over one engine runtime.

Theory of operation: an organization runtime is a tenant of the runtime, its resource limits
the tenant's ``engine.Limits`` (``ResourceLimits`` keeps the design's names and converts), so
the engine enforces them and shares the dispatcher between organizations by weight. An agent
is an engine agent ``(organization, name)`` in that tenant; its long-running memory is its
data, hibernated into the runtime's store after each execution, woken by the next, and
removed by the runtime's ``expire_after`` once it has slept ``memory_ttl`` seconds; an
expired agent starts again from its package version's starting memory (a factory given at
``register_package``), and reading a hibernated agent's memory decodes its record without
waking it. Agent packages are versioned ``engine.Machine`` definitions registered per name;
each organization runs its own copy of the versions it deploys, so deploying is
``rt.upgrade`` of that organization's agents alone, and rolling back an upgrade back (never
``rt.rollback_upgrade``: the runtime's upgrade stack is shared). ``execute_agent`` is the
design's ``executeAgent`` flow: limits checked (past ``max_queue_size``, counted by the layer,
refused or waiting in the organization's line, by priority and in order, the only queue the
layer has, because ``rt.request`` cannot wait), memory restored, ``rt.request``, memory
stored, metrics counted. Metrics are the tenant's figures and their history the runtime's
``MetricsHistory`` (with the line's length). The layer keeps names, packages, starting-memory
factories, its line and counters; the state, the mail, the memory and the limits are the
engine's, and the layer holds no copy of any agent's data.
"""

from ._errors import ExecutionFailedError as ExecutionFailedError
from ._errors import OrganizationExistsError as OrganizationExistsError
from ._errors import OrganizationLimitError as OrganizationLimitError
from ._errors import OrganizationNotFoundError as OrganizationNotFoundError
from ._errors import PackageExistsError as PackageExistsError
from ._errors import PackageNotFoundError as PackageNotFoundError
from ._manager import Organizations as Organizations
from ._open import open_organizations as open_organizations
from ._values import Deployment as Deployment
from ._values import ExecutionResult as ExecutionResult
from ._values import Organization as Organization
from ._values import OrganizationMetrics as OrganizationMetrics
from ._values import ResourceLimits as ResourceLimits

__all__ = [
    "Deployment",
    "ExecutionFailedError",
    "ExecutionResult",
    "Organization",
    "OrganizationExistsError",
    "OrganizationLimitError",
    "OrganizationMetrics",
    "OrganizationNotFoundError",
    "Organizations",
    "PackageExistsError",
    "PackageNotFoundError",
    "ResourceLimits",
    "open_organizations",
]
