"""The APIs of three older agent-runtime designs, as thin layers over the engine.

Theory of operation: each module offers the API its design's users write code against, and
does the work with the engine's own parts: agents on the dispatcher's mailboxes and machines,
tenants for isolation and limits, the store for persistence, hibernation for long-lived
memory, versioned machines for deployment and rollback, the record stream for subscriptions.
No layer keeps a second mailbox, a second copy of an agent's state or its own storage. The
engine never imports this package; a layer imports only the engine's public API.

- ``engine.services.activities``: an agent runtime service (create, send activities, query,
  subscribe, terminate), activities typed ``STATE_CHANGE``, ``COMMAND`` or custom, served by
  priority, with statuses, metrics and typed errors.
- ``engine.services.conversations``: containers, images (persistent conversations) and
  agents, driven by a command API with correlation ids and an event bus.
- ``engine.services.organizations``: runtimes per organization with resource limits,
  long-running agent memory with expiry, versioned agent packages, and the execute-agent
  flow.
"""
