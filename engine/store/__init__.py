"""Durable agents: snapshots, their encoding, and the stores that keep them.

Theory of operation: this layer sits above the runtime and reads agents through it
(``Runtime._export`` / ``_import``: plain data, no encoding); the runtime never imports it.
``capture`` takes ``AgentSnapshot`` values of any agents at one instant, with timer deadlines
turned into wall-clock times so they survive a restart of the process; ``encode`` packs one
into a framed record (format version, CRC-32, msgpack body through a ``Codec``: exact tuples,
sets and big ints, the user's registered types, never pickle); ``decode`` checks and reads one
back; ``restore`` rebuilds agents on the machines of their names. A ``Store`` keeps records
per agent with ids and times: ``MemoryStore`` and ``SQLiteStore`` (stdlib ``sqlite3``, WAL,
one transaction per write), and ``PostgresStore`` (a PostgreSQL table through a connection
pool: psycopg, the ``postgres`` extra, imported only when one is made). ``save`` and ``load``
join the two. Store I/O is synchronous and never runs inside the drain loop; under trio, run
it in a worker thread (``trio.to_thread.run_sync``).

Recordings: ``save_recording`` appends a run's transition records (and its gaps) to a named
recording kept under a reserved key, ``load_recording`` reads it back for ``engine.replay``,
and ``record_to_store`` is a task that does the saving while a runtime runs.
"""

from ..core._exceptions import RecordingNotFoundError as RecordingNotFoundError
from ._codec import Codec as Codec
from ._codec import CodecError as CodecError
from ._codec import CorruptRecordError as CorruptRecordError
from ._hibernate import Hibernation as Hibernation
from ._history import SnapshotInfo as SnapshotInfo
from ._history import SnapshotNotFoundError as SnapshotNotFoundError
from ._history import fork as fork
from ._history import rollback as rollback
from ._history import snapshot as snapshot
from ._history import snapshots as snapshots
from ._log import Commit as Commit
from ._log import CommitLog as CommitLog
from ._persist import LoadReport as LoadReport
from ._persist import load as load
from ._persist import load_records as load_records
from ._persist import records as records
from ._persist import save as save
from ._postgres import PostgresStore as PostgresStore
from ._recorder import Recorder as Recorder
from ._recorder import RecorderStatistics as RecorderStatistics
from ._recorder import record_to_store as record_to_store
from ._recording import forget_recording as forget_recording
from ._recording import load_recording as load_recording
from ._recording import recordings as recordings
from ._recording import save_recording as save_recording
from ._snapshot import AgentSnapshot as AgentSnapshot
from ._snapshot import MachineNotFoundError as MachineNotFoundError
from ._snapshot import TimerSnapshot as TimerSnapshot
from ._snapshot import capture as capture
from ._snapshot import decode as decode
from ._snapshot import encode as encode
from ._snapshot import restore as restore
from ._stores import RESERVED as RESERVED
from ._stores import TOMBSTONE as TOMBSTONE
from ._stores import MemoryStore as MemoryStore
from ._stores import SQLiteStore as SQLiteStore
from ._stores import Store as Store
from ._stores import StoredRecord as StoredRecord
from ._stores import agent_key as agent_key
