"""Serializers of the model registry and proposal jobs."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from .models import ModelVersion, ProposalJob


class ModelVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["id", "name", "modality", "architecture", "weights_file", "sha256", "status", "metrics",
                  "card", "training_run", "created_at", "updated_at"]
        read_only_fields = fields


class ProposalJobSerializer(serializers.ModelSerializer):
    study = serializers.IntegerField(source="series.study_id", read_only=True)
    model_name = serializers.CharField(source="model_version.name", read_only=True)

    class Meta:
        model = ProposalJob
        fields = ["id", "project", "study", "series", "instance", "target_key", "modality", "model_version",
                  "model_name", "status", "attempts", "error", "method", "fallback_reason", "revision_id", "queue",
                  "worker", "duration_s", "timings", "created_at", "started_at", "heartbeat_at", "finished_at"]
        read_only_fields = fields


class RerunSerializer(serializers.Serializer):
    """Body of ``POST /api/proposals/rerun/``: a model version and a series or a study."""

    model_version = serializers.CharField(help_text="Model version name or id")
    series = serializers.IntegerField(required=False)
    study = serializers.IntegerField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("series" in attrs) == ("study" in attrs):
            raise serializers.ValidationError("give exactly one of 'series' or 'study'")
        return attrs
