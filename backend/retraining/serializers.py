"""Serializers of retraining."""

from __future__ import annotations

from rest_framework import serializers

from modeling.models import ModelModality

from .models import ChampionChange


class PromoteSerializer(serializers.Serializer):
    model_version = serializers.CharField(help_text="Name or id of the model version to make champion")
    reason = serializers.CharField(allow_blank=False, max_length=2000)


class RollbackSerializer(serializers.Serializer):
    modality = serializers.ChoiceField(choices=ModelModality.choices)
    reason = serializers.CharField(allow_blank=False, max_length=2000)


class ChampionChangeSerializer(serializers.ModelSerializer):
    previous_name = serializers.CharField(source="previous.name", default=None, read_only=True)
    champion_name = serializers.CharField(source="champion.name", read_only=True)
    actor_name = serializers.CharField(source="actor.username", default=None, read_only=True)

    class Meta:
        model = ChampionChange
        fields = ["id", "modality", "previous", "previous_name", "champion", "champion_name", "kind", "actor_name",
                  "reason", "created_at"]
