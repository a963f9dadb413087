"""REST serializers for users, memberships and the audit log."""

from __future__ import annotations

from rest_framework import serializers

from .models import AuditEntry, Membership, User


class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.SlugRelatedField(source="user", slug_field="username", queryset=User.objects.all())

    class Meta:
        model = Membership
        fields = ["id", "username", "project", "role", "created_at"]
        read_only_fields = ["id", "created_at"]


class MembershipRoleSerializer(MembershipSerializer):
    """A membership's role is the only thing a change may touch (user and project stay)."""

    username = serializers.SlugRelatedField(source="user", slug_field="username", read_only=True)

    class Meta(MembershipSerializer.Meta):
        read_only_fields = ["id", "username", "project", "created_at"]


class RoleSerializer(serializers.ModelSerializer):
    class Meta:
        model = Membership
        fields = ["project", "role"]


class MeSerializer(serializers.ModelSerializer):
    memberships = RoleSerializer(many=True, read_only=True)

    class Meta:
        model = User
        fields = ["id", "username", "email", "is_staff", "memberships"]


class AuditEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEntry
        fields = [
            "id", "created_at", "actor_name", "action", "target_type", "target_id", "target_repr",
            "project_id", "before", "after", "reason",
        ]
        read_only_fields = fields
