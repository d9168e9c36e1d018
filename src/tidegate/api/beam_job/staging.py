"""Artifact staging for Beam's Job API: the files a PortableRunner client stages with a job.

Beam's own ``ArtifactStagingService`` does the protocol (the server asks the client
for each file over ``ReverseArtifactRetrievalService``) and writes the files into a
folder per session. When the job is run, its files are embedded into the pipeline's
environments as data and the folder is deleted: the pipeline the job keeps in the store
then needs no shared folder, and any worker can run it.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import TimeoutError as FuturesTimeout
from pathlib import Path
from typing import Any

from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.portability import artifact_service as beam_artifact_service

from tidegate.errors import InvalidArgument
from tidegate.service.staging import Staging

__all__ = ["MAX_EMBEDDED_BYTES", "StagingSessions", "embed_staged_files"]

runner_pb: Any = beam_runner_api_pb2
artifact_service: Any = beam_artifact_service  # its handlers are untyped

MAX_EMBEDDED_BYTES = 256 * 1024 * 1024
"""The most a job's staged files may weigh together: they are kept with the job."""

_STAGING_WAIT_S = 30.0
_FILE_URN = common_urns.artifact_types.FILE.urn
_EMBEDDED_URN = common_urns.artifact_types.EMBEDDED.urn


def embed_staged_files(
    pipeline: Any, resolved: Mapping[str, Sequence[Any]], folder: Path, limit: int = MAX_EMBEDDED_BYTES
) -> Any:
    """A copy of the pipeline whose environments carry their staged files (``resolved``: their paths) as data.

    Only files the staging session wrote into ``folder`` are read: a path anywhere else
    (the client's own paths, of a session that never staged) is refused.
    """
    staging = Staging([folder])
    result = runner_pb.Pipeline()
    result.CopyFrom(pipeline)
    total = 0
    for env_id, dependencies in resolved.items():
        env = result.components.environments[env_id]
        del env.dependencies[:]
        for dep in dependencies:
            if dep.type_urn == _FILE_URN:
                data = staging.read(runner_pb.ArtifactFilePayload.FromString(dep.type_payload).path)
                total += len(data)
                if total > limit:
                    raise InvalidArgument(
                        f"the staged files exceed {limit >> 20} MiB, more than a job can carry",
                        reason="ARTIFACTS_TOO_LARGE",
                    )
                payload = runner_pb.EmbeddedFilePayload(data=data).SerializeToString()
                dep = runner_pb.ArtifactInformation(
                    type_urn=_EMBEDDED_URN, type_payload=payload, role_urn=dep.role_urn, role_payload=dep.role_payload
                )
            env.dependencies.append(dep)
    return result


class StagingSessions:
    """One staging session per prepared job, its files in a folder of its own under ``folder``.

    Registered on the gRPC server as Beam's ``ArtifactStagingService``.
    """

    def __init__(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)  # sessions of an earlier run: their preparations are gone
        folder.mkdir(parents=True, exist_ok=True)
        self._folder = folder
        self._service = artifact_service.ArtifactStagingService(
            artifact_service.BeamFilesystemHandler(str(folder)).file_writer
        )
        self._opened: set[str] = set()

    def open(self, token: str, pipeline: Any) -> None:
        """Expect the files that the pipeline's environments name, under ``token``."""
        environments = pipeline.components.environments
        self._service.register_job(token, {env_id: list(env.dependencies) for env_id, env in environments.items()})

    def ReverseArtifactRetrievalService(self, responses: Iterator[Any], context: Any = None) -> Any:  # Beam's name
        """Fetch a session's files from the client (Beam's protocol), noting that the session began."""
        first = next(responses)
        self._opened.add(first.staging_token)
        return self._service.ReverseArtifactRetrievalService(itertools.chain([first], responses), context)

    def embed(self, token: str, pipeline: Any) -> Any:
        """The pipeline with the session's files embedded (as it was if the client staged none); ends the session."""
        try:
            resolved = self._resolved(token)
            return embed_staged_files(pipeline, resolved, self._folder / token) if resolved else pipeline
        finally:
            shutil.rmtree(self._folder / token, ignore_errors=True)

    def close(self, token: str) -> None:
        """End a session whose job never ran, and delete its files."""
        self._resolved(token)
        shutil.rmtree(self._folder / token, ignore_errors=True)

    def _resolved(self, token: str) -> dict[str, list[Any]] | None:
        # A client's staging call ends a moment before its session is marked resolved: wait for that.
        timeout = _STAGING_WAIT_S if token in self._opened else 0
        self._opened.discard(token)
        try:
            resolved: dict[str, list[Any]] = self._service.resolved_deps(token, timeout=timeout)
        except (FuturesTimeout, KeyError):
            return None
        return resolved
