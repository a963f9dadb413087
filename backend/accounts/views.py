"""REST API for the current user, project memberships and the audit log."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.decorators import api_view
from rest_framework.exceptions import PermissionDenied, Throttled, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from . import audit
from .filters import AuditEntryFilter
from .models import AuditEntry, Membership
from .permissions import MANAGE_ROLES, ProjectRolePermission, has_role, project_ids_for
from .serializers import AuditEntrySerializer, MeSerializer, MembershipRoleSerializer, MembershipSerializer

#: One answer for every project the caller does not administer, whether it exists or not.
NOT_PROJECT_ADMIN = "only admins of that project can add members to it"


def require_project_admin(user: Any, raw_project: Any) -> None:
    """Refuse (403) unless ``user`` is an admin of the project id given in the request body.

    Checked before the body is validated, so that the answer for a project the caller does not
    administer never depends on whether that project, the user named or their membership exist.
    A value that is not an id is left to the serializer (its error names nothing that exists).
    """
    try:
        project_id = int(raw_project)
    except (TypeError, ValueError):
        return
    if not has_role(user, project_id, MANAGE_ROLES):
        raise PermissionDenied(NOT_PROJECT_ADMIN)


class MembershipViewSet(viewsets.ModelViewSet):
    """Members of your projects; project admins add members, change their role and remove them.

    A change (PUT/PATCH) touches only ``role``; every change is written to the audit log.
    """

    queryset = Membership.objects.select_related("user")
    permission_classes = [IsAuthenticated, ProjectRolePermission]
    write_roles = MANAGE_ROLES
    filterset_fields = ["project", "role"]

    def get_queryset(self) -> QuerySet:
        return super().get_queryset().filter(project_id__in=project_ids_for(self.request.user))

    def get_serializer_class(self) -> type[BaseSerializer]:
        return MembershipRoleSerializer if self.action in ("update", "partial_update") else MembershipSerializer

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        require_project_admin(request.user, request.data.get("project"))
        return super().create(request, *args, **kwargs)

    def perform_create(self, serializer: BaseSerializer) -> None:
        with transaction.atomic():
            membership = serializer.save()
            audit.record(self.request.user, "membership.create", membership,
                         after=audit.snapshot(membership, audit.MEMBERSHIP_FIELDS))

    def perform_update(self, serializer: BaseSerializer) -> None:
        before = audit.snapshot(serializer.instance, audit.MEMBERSHIP_FIELDS)
        with transaction.atomic():
            membership = serializer.save()
            old, new = audit.changed(before, audit.snapshot(membership, audit.MEMBERSHIP_FIELDS))
            if old or new:
                audit.record(self.request.user, "membership.update", membership, before=old, after=new)

    def perform_destroy(self, instance: Membership) -> None:
        with transaction.atomic():
            audit.record(self.request.user, "membership.delete", instance,
                         before=audit.snapshot(instance, audit.MEMBERSHIP_FIELDS))
            instance.delete()


class AuditEntryViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit log of the projects you administer (site superusers see every entry), newest first.

    Filter with ``?project=<id>``, ``action``, ``target_type``, ``since`` (ISO 8601). Entries are
    never changed or deleted.
    """

    queryset = AuditEntry.objects.all()
    serializer_class = AuditEntrySerializer
    filterset_class = AuditEntryFilter
    ordering_fields = ["created_at"]

    def get_queryset(self) -> QuerySet:
        entries = super().get_queryset()
        if self.request.user.is_superuser:
            return entries
        return entries.filter(project_id__in=project_ids_for(self.request.user, MANAGE_ROLES))


class ObtainAuthTokenView(ObtainAuthToken):
    """POST ``username`` + ``password`` → ``{"token"}``; 429 while django-axes locks the login out.

    The lock-out itself is decided by django-axes (its authentication backend); DRF's request
    hides the flag from the axes middleware, so this view turns it into the same 429 answer.
    """

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return super().post(request, *args, **kwargs)
        except ValidationError:
            if getattr(request, "axes_locked_out", False):
                raise Throttled(
                    wait=settings.AXES_COOLOFF_TIME.total_seconds(),
                    detail="too many failed logins for this user from this address; try again later",
                ) from None
            raise


@extend_schema(responses=MeSerializer)
@api_view(["GET"])
def me(request: Request) -> Response:
    """The authenticated user and their project roles."""
    return Response(MeSerializer(request.user).data)
