"""The coordinator: a :class:`~.session.Session` running requests through a pipeline of stages.

Public modules:

- ``session``: submit/run/stream, results and errors, the session's plan and model.
- ``deploy``: from a plan (or bare stages) to a running session; the re-planner.
- ``pipeline``: stage specs, chain checks, deploying one pipeline.
- ``recovery``: re-planning around dead workers (``Replan``, ``Replacement``).
- ``timing``: where each request's time went (``Result``, ``RequestTiming``).

Internal (used by the session only): ``_requests`` (the requests in flight and their
deadlines), ``_inbox`` (the result socket, read by whichever thread waits),
``_workers`` (the result address, a checked client per device, what a session
releases), ``_heartbeat`` (noticing dead, hung and revived workers), ``_overdue`` (when a
request should be done).
"""
