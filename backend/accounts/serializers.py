"""REST serializers for users and memberships."""

from __future__ import annotations

from rest_framework import serializers

from .models import Membership, User


class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.SlugRelatedField(source="user", slug_field="username", queryset=User.objects.all())

    class Meta:
        model = Membership
        fields = ["id", "username", "project", "role", "created_at"]
        read_only_fields = ["id", "created_at"]


class MeSerializer(serializers.ModelSerializer):
    memberships = serializers.SerializerMethodField()

    class Meta:
        model = User
        fields = ["id", "username", "email", "is_staff", "memberships"]

    def get_memberships(self, obj: User) -> list[dict[str, object]]:
        return [{"project": m.project_id, "role": m.role} for m in obj.memberships.all()]
