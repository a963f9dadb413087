"""Serializers of retraining."""

from __future__ import annotations

from rest_framework import serializers

from modeling.models import ModelModality

from modeling.models import TrainingRun

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


class TrainingRunSerializer(serializers.ModelSerializer):
    init_from_name = serializers.CharField(source="init_from.name", default=None, read_only=True)

    class Meta:
        model = TrainingRun
        fields = ["id", "name", "project", "modality", "status", "dataset_version_id", "dataset_sha256", "init_from",
                  "init_from_name", "seed", "code_version", "config", "progress", "error", "attempts",
                  "cancel_requested", "created_at", "started_at", "finished_at", "heartbeat_at"]
        read_only_fields = fields


class StartTrainingSerializer(serializers.Serializer):
    project = serializers.IntegerField()
    modality = serializers.ChoiceField(choices=ModelModality.choices)
    from_scratch = serializers.BooleanField(default=False)
    seed = serializers.IntegerField(default=42)
