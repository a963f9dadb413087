"""Serializers of QC flags and summaries."""

from __future__ import annotations

from rest_framework import serializers

from .models import QCFlag, QCSummary


class QCFlagSerializer(serializers.ModelSerializer):
    class Meta:
        model = QCFlag
        fields = ["name", "value", "unit", "flagged", "message", "detail"]
        read_only_fields = fields


class QCSummarySerializer(serializers.ModelSerializer):
    flags = QCFlagSerializer(source="revision.qc_flags", many=True, read_only=True)
    series = serializers.IntegerField(source="revision.series_id", read_only=True)
    target_key = serializers.CharField(source="revision.target_key", read_only=True)
    number = serializers.IntegerField(source="revision.number", read_only=True)
    source = serializers.CharField(source="revision.source", read_only=True)

    class Meta:
        model = QCSummary
        fields = ["revision", "series", "target_key", "number", "source", "modality", "flagged_count", "priority",
                  "confidence", "computed_at", "flags"]
        read_only_fields = fields
