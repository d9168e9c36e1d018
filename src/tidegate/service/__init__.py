"""The use cases, shared by every API surface; no HTTP or gRPC types inside.

- ``jobs``: create, read, list and update jobs, and the service's own edges (``JobService``);
- ``snapshots``: snapshot a job, list, read, delete and expire snapshots;
- ``templates``: classic and flex templates launched as jobs, over ``template_files``
  (the template formats) and ``staging`` (reading staged files).
"""
