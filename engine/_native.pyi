# Type stub for the compiled hot path (_native/ -> engine._native). Its Python surface is the
# twin's, by contract (tests/test_public_api.py checks the names), so the types are shared.
from typing import Final

import numpy as np

from ._hotpath_py import AgentContext as AgentContext
from ._hotpath_py import AgentRef as AgentRef
from ._hotpath_py import Dispatcher as Dispatcher
from ._hotpath_py import Event as Event

IMPLEMENTATION: Final[str]
AGENT_DTYPE: Final[np.dtype[np.void]]
AGENT_COLD_DTYPE: Final[np.dtype[np.void]]
