"""The sans-IO Mealy core: machine definitions, actions, value types, the exception tree.

Theory of operation: a ``Machine`` is compiled once, when it is defined, into three int32
tables indexed ``state * n_events + event`` (next state, output code, handler index); a step
is a table lookup, and a bad definition is reported all at once. Handlers are bound when the
machine is built, never looked up by name when they fire. Actions (``Postpone``, timers,
``Send``, ...) and values (``Step``, ``Priority``, ``DeadLetter``, ``OutputBatch``) are plain
frozen attrs data that the layers above interpret. Nothing here knows about time, I/O or
trio (the exception tree reuses trio's ``WouldBlock`` as a base class, as a type only).
Machines read from the transitions library and drawn as Mermaid or Graphviz live here too.
"""
