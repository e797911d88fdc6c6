# Type stub for the compiled hot path (_native/ -> engine._native). Its Python surface is the
# twin's, by contract (tests/test_public_api.py checks the names), so the types are shared.
from typing import Final

import numpy as np

from .hotpath._python import AgentContext as AgentContext
from .hotpath._python import AgentRef as AgentRef
from .hotpath._python import Dispatcher as Dispatcher
from .hotpath._python import Event as Event

IMPLEMENTATION: Final[str]
AGENT_DTYPE: Final[np.dtype[np.void]]
AGENT_COLD_DTYPE: Final[np.dtype[np.void]]
