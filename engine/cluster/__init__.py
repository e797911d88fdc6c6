"""Scale-out on Ray: the same machines sharded over Ray actors, routed by agent id.

Theory of operation: a ``Cluster`` (the driver's object) starts N shard actors; each runs a
runtime under trio in a thread of its process (``open_runtime``: the compiled dispatcher,
timers, the commit log into its own store, recovery), built from the machines a ``setup``
callable returns. An agent lives on the shard that rendezvous hashing of its id picks,
unless the directory (kept by a coordinator actor and copied on every shard) says it moved.
The driver calls the shard an id lives on (Ray is the control plane); a ``Send`` action for
an agent on another shard is gathered per destination and written as numbered batches on a
TCP connection per pair of shards (the data plane, ``_wire``), applied in order per sender
and receiver. Moves hand an agent over with its snapshot and keep every sender's
order (``_shard``). A shard killed mid-run is restarted by Ray and recovers its agents from
its store, as one runtime does after a crash.

Ray is imported only when a cluster starts (the ``cluster`` extra installs it).
"""

from ._cluster import Cluster as Cluster
from ._cluster import ClusterStatistics as ClusterStatistics
from ._cluster import ClusterSubscription as ClusterSubscription
from ._cluster import ShardFailedError as ShardFailedError
from ._cluster import open_cluster as open_cluster
from ._routing import Routes as Routes

__all__ = [
    "Cluster",
    "ClusterStatistics",
    "ClusterSubscription",
    "Routes",
    "ShardFailedError",
    "open_cluster",
]
