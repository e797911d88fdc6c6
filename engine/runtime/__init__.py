"""The runtime: an agent registry in front of one hot-path dispatcher, plus time and tasks.

Theory of operation: ``Runtime`` resolves ids and names, checks arguments once, and owns what
the dispatcher must not know: the clock, the timer queue (``_timers``), supervision
(``_supervision``), pending requests, the transition and dead-letter rings (``_ring``) and
the instruments (``_instruments``). It works with no event loop at all (a host calls
``send_nowait`` / ``run_until_idle`` / ``fire_timers``). Under trio a ``Host`` (``_host``)
attaches to it: a dispatch task that reads trio's clock, fires due timers, runs one batch of
the dispatcher, wakes waiters and yields; agent ``Work`` runs as tasks of the same nursery.
The runtime never imports its host, its exporters or the environment's plugins: they attach
to it through hooks (``_host``, ``start``, instruments, the output sink).
"""
