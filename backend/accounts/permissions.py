"""Project-scoped permission checks shared by every API endpoint.

Rule: a user sees and changes only the data of projects they are a member of, with what their
role allows. Non-members get 404 for objects (no existence leak) and empty lists.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from .models import Membership, Role

#: Every role may read the project's data (lists, details, WADO).
READ_ROLES: frozenset[str] = frozenset(Role.values)
#: Who may upload images into a project.
UPLOAD_ROLES: frozenset[str] = frozenset({Role.ADMIN, Role.REVIEWER, Role.ML_ENGINEER})
#: Who may change project settings or delete imaging data.
MANAGE_ROLES: frozenset[str] = frozenset({Role.ADMIN})


def project_ids_for(user: Any, roles: Iterable[str] = READ_ROLES) -> QuerySet:
    """Ids of the projects where ``user`` holds one of ``roles`` (a subquery-friendly queryset)."""
    if user is None or isinstance(user, AnonymousUser) or not user.is_authenticated:
        return Membership.objects.none().values_list("project_id", flat=True)
    return Membership.objects.filter(user=user, role__in=list(roles)).values_list("project_id", flat=True)


def role_in(user: Any, project_id: int) -> str | None:
    """The user's role in a project, or ``None`` when not a member."""
    if user is None or not user.is_authenticated:
        return None
    return Membership.objects.filter(user=user, project_id=project_id).values_list("role", flat=True).first()


def has_role(user: Any, project_id: int, roles: Iterable[str]) -> bool:
    """Whether the user holds one of ``roles`` in the project."""
    role = role_in(user, project_id)
    return role is not None and role in set(roles)


class ProjectRolePermission(BasePermission):
    """Object-level check: reading needs membership, writing needs a role in ``write_roles``.

    Views set ``write_roles`` (default: project admins). Objects expose ``project_id`` (a
    project itself is checked by its primary key).
    """

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        project_id = getattr(obj, "project_id", None) or obj.pk  # a Project is its own project
        roles = READ_ROLES if request.method in ("GET", "HEAD", "OPTIONS") else getattr(view, "write_roles", MANAGE_ROLES)
        return has_role(request.user, project_id, roles)
