"""Who may do what: the permissions each call needs, the role that holds each, and the caller.

The roles follow Dataflow's IAM roles (``roles/dataflow.viewer``, ``.developer``,
``.admin``), each holding every permission of those below it; the permissions carry
Dataflow's names, so a refusal reads as Dataflow's does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tidegate.errors import PermissionDenied
from tidegate.model import ANONYMOUS, Role

__all__ = ["OPEN", "Caller", "Permission"]


class Permission(enum.Enum):
    """What a call does, by Dataflow's permission names; ``role`` is the least role that may do it."""

    JOBS_GET = "dataflow.jobs.get"
    JOBS_LIST = "dataflow.jobs.list"
    MESSAGES_LIST = "dataflow.messages.list"
    METRICS_GET = "dataflow.metrics.get"
    SNAPSHOTS_GET = "dataflow.snapshots.get"
    SNAPSHOTS_LIST = "dataflow.snapshots.list"
    TEMPLATES_GET = "dataflow.templates.get"
    JOBS_CREATE = "dataflow.jobs.create"
    JOBS_UPDATE = "dataflow.jobs.updateContents"
    """UpdateJob: cancel, drain, start a held job, new labels."""
    JOBS_SNAPSHOT = "dataflow.jobs.snapshot"
    SNAPSHOTS_DELETE = "dataflow.snapshots.delete"
    TEMPLATES_LAUNCH = "dataflow.templates.launch"
    CREDENTIALS_MANAGE = "tidegate.credentials.manage"
    """List, create, disable and delete the project's service accounts and API tokens."""

    @property
    def role(self) -> Role:
        return _ROLE[self]


_VIEWER = {
    Permission.JOBS_GET,
    Permission.JOBS_LIST,
    Permission.MESSAGES_LIST,
    Permission.METRICS_GET,
    Permission.SNAPSHOTS_GET,
    Permission.SNAPSHOTS_LIST,
    Permission.TEMPLATES_GET,
}
_ADMIN = {Permission.CREDENTIALS_MANAGE}
_ROLE = {p: Role.VIEWER if p in _VIEWER else Role.ADMIN if p in _ADMIN else Role.DEVELOPER for p in Permission}


@dataclass(frozen=True)
class Caller:
    """Who makes a call and the role it holds: in one project, or in every one (``project_id`` None)."""

    name: str
    """As the job's history records it: a service account's email, a token's name, ``anonymous``."""
    role: Role
    project_id: str | None

    def may(self, permission: Permission, project_id: str) -> bool:
        """Whether it may do this in the project."""
        return (self.project_id is None or self.project_id == project_id) and self.role >= permission.role

    def require(self, permission: Permission, project_id: str) -> Caller:
        """Itself, if it may do this in the project; else PERMISSION_DENIED, saying nothing of the project."""
        if not self.may(permission, project_id):
            raise PermissionDenied(
                f"Permission '{permission.value}' denied on project {project_id} (or it may not exist)",
                metadata={"permission": permission.value, "resource": f"projects/{project_id}"},
            )
        return self


OPEN = Caller(ANONYMOUS, Role.ADMIN, None)
"""The caller of a tidegate that runs open: anyone, with every permission."""
