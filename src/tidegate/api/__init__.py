"""Thin adapters over the service: they parse requests, call it, and map its errors.

- ``rest``: Dataflow's REST API, v1b3 (``app`` routes, ``jobs`` and ``templates`` handle, ``http`` is shared);
- ``grpc_server``: the same over gRPC (``google.dataflow.v1beta3``);
- ``beam_job``: Beam's Job API, for PortableRunner;
- ``wire`` and ``template_calls``: what the REST and gRPC adapters share.
"""
