"""REST API for the current user and project memberships."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import api_view
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from .models import Membership
from .permissions import MANAGE_ROLES, ProjectRolePermission, has_role, project_ids_for
from .serializers import MeSerializer, MembershipSerializer


class MembershipViewSet(viewsets.ModelViewSet):
    """Members of your projects; project admins add, change and remove members."""

    queryset = Membership.objects.select_related("user")
    serializer_class = MembershipSerializer
    permission_classes = [IsAuthenticated, ProjectRolePermission]
    write_roles = MANAGE_ROLES
    filterset_fields = ["project", "role"]

    def get_queryset(self) -> QuerySet:
        return super().get_queryset().filter(project_id__in=project_ids_for(self.request.user))

    def perform_create(self, serializer: MembershipSerializer) -> None:
        if not has_role(self.request.user, serializer.validated_data["project"].pk, MANAGE_ROLES):
            raise PermissionDenied("only project admins can add members")
        serializer.save()

    def perform_update(self, serializer: MembershipSerializer) -> None:
        if not has_role(self.request.user, serializer.validated_data.get("project", serializer.instance.project).pk, MANAGE_ROLES):
            raise PermissionDenied("only project admins can change members")
        serializer.save()


@extend_schema(responses=MeSerializer)
@api_view(["GET"])
def me(request: Request) -> Response:
    """The authenticated user and their project roles."""
    return Response(MeSerializer(request.user).data)
