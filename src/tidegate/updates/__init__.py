"""The update of a running streaming job (CreateJob with ``replaceJobId``), in one place.

Both the service and the scheduler call down into it; it calls up into neither.

- ``compatibility``: at create, before anything is touched, whether the new job can take
  the old one's state (its stateful operators' uids, ``transformNameMapping``), and the
  uids the new job's renamed operators run under to find that state.
- ``procedure``: once the new job is launched, the old job's run is stopped with a
  savepoint, the new one starts from it, and the old job becomes UPDATED; if the new job
  does not start, the old one resumes from the same savepoint.
"""
