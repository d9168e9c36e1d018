"""tidegate: a self-hosted job service with Google Cloud Dataflow's job model."""

__version__ = "0.1.0"
