"""The use cases, shared by every API surface: jobs, snapshots, templates."""
