"""Server settings, from command-line flags and ``TIDEGATE_*`` environment variables."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FLINK_PYTHON_MODES", "Settings", "default_data_dir"]

FLINK_PYTHON_MODES = ("thread", "process")
"""How the local Flink cluster runs jobs' Python functions: in its TaskManager, or in Python worker processes."""


def default_data_dir() -> Path:
    """``$TIDEGATE_DATA_DIR``, else ``$XDG_DATA_HOME/tidegate``, else ``~/.local/share/tidegate``."""
    if env := os.environ.get("TIDEGATE_DATA_DIR"):
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tidegate"


@dataclass(frozen=True)
class Settings:
    """What ``tidegate server`` runs with."""

    host: str = "127.0.0.1"
    port: int = 8080
    grpc_port: int = 8093
    """The gRPC API's port (8093: clear of Flink's REST 8081 and Beam's job server 8097-8099); 0 for none."""
    job_port: int = 8099
    """Beam's Job API port, for PortableRunner's ``--job_endpoint`` (8099, as Beam's own job server); 0 for none."""
    data_dir: Path = Path()
    database_url: str = ""
    """``postgresql://…`` for PostgreSQL; empty means SQLite in ``data_dir``."""
    database_pool_size: int = 4
    """PostgreSQL connections for the API's writes (group-committed), and as many for its reads."""
    default_location: str = "us-central1"
    engines: tuple[str, ...] = ("beam",)
    """Engines to run jobs on; none: an API-only server, where jobs wait in STOPPED."""
    max_jobs: int = 4
    """Jobs running at once (PENDING through CANCELLING); more wait in QUEUED. 0: no limit."""
    max_jobs_per_project: int = 0
    flex_window_s: float = 6 * 3600
    """How long a FlexRS job may be held back for a quiet moment."""
    resource_cleanup: bool = False
    """RESOURCE_CLEANING_UP for every batch job (jobs can also ask for it one by one)."""
    flink_rest_url: str = ""
    """An existing Flink cluster's REST address; empty: the flink engine starts a local cluster."""
    flink_checkpoint_interval_s: float = 10.0
    """How often the local cluster's jobs checkpoint (a job whose cluster is lost resumes from its latest)."""
    flink_python_mode: str = ""
    """How Flink jobs run their Python functions: ``thread`` (in the TaskManager) or ``process``; empty: thread
    on the local cluster, PyFlink's default (process) on one given by ``flink_rest_url``."""
    flink_warm_submit: bool = True
    """Submit PyFlink programs through a submitter kept ready (else every job through ``flink run``)."""
    flink_warm_submitters: int = 2
    """How many PyFlink submitters are kept ready (about 300 MB each): a job right after another finds one."""
    gcs_emulator_port: int = 0
    """Start a GCS emulator on this port beside the server (``STORAGE_EMULATOR_HOST`` for staging and jobs); 0: none."""
    gcs_buckets: tuple[str, ...] = ()
    """Buckets the server's GCS emulator creates at start."""
    launcher_python: str = ""
    """The Python that runs flex templates' Beam programs (it needs apache-beam[gcp]); empty: the server's own."""
    run_as: str = ""
    """The user (name or id) jobs' code runs as (Beam pipelines, flex templates' programs); empty: the server's."""
    worker_python: str = ""
    """The Python that runs Beam pipelines (it needs tidegate and apache-beam); empty: the server's own."""
    log_format: str = "text"
    """``text``: the server's log as it comes; ``json``: one JSON object per line (time, level, logger, message)."""
    access_log: bool = False
    """A line in the log for every HTTP request (uvicorn's access log)."""
    insecure: bool = False
    """Serve on an address other than loopback with no credential created (open to anyone who can reach it)."""

    @property
    def loopback(self) -> bool:
        """Whether the server listens on a loopback address only (``127.0.0.1``, ``::1``, ``localhost``)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False

    staging_roots: tuple[Path, ...] = ()
    """Folders (besides ``staging_dir``) whose files clients may name as staged files, templates and programs."""
    tls_cert: str = ""
    """A PEM certificate (chain) to serve REST and gRPC over TLS with; empty: plain HTTP and gRPC."""
    tls_key: str = ""
    """The certificate's PEM private key."""

    @property
    def staging_dir(self) -> Path:
        """The data directory's staging folder: always a staging root (``tidegate run`` stages there)."""
        return self.data_dir / "staging"

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    @property
    def store_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'tidegate.db').resolve()}"
