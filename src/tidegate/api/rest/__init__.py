"""Dataflow's REST API, v1b3."""
