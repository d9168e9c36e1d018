"""The update of a running streaming job (CreateJob with ``replaceJobId``)."""
