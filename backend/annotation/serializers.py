"""Serializers of mask revisions."""

from __future__ import annotations

from rest_framework import serializers

from .models import MaskRevision, RevisionStatus


class MaskRevisionSerializer(serializers.ModelSerializer):
    study = serializers.IntegerField(source="series.study_id", read_only=True)
    model_name = serializers.CharField(source="model_version.name", read_only=True, default=None)
    author_name = serializers.CharField(source="author.username", read_only=True, default=None)
    curated = serializers.SerializerMethodField(help_text="Approved: the revision is a curated label")

    def get_curated(self, revision: MaskRevision) -> bool:
        return revision.status == RevisionStatus.APPROVED

    class Meta:
        model = MaskRevision
        fields = ["id", "project", "study", "series", "instance", "target_key", "number", "parent", "source",
                  "author", "author_name", "model_version", "model_name", "proposal_job", "method", "note",
                  "status", "curated", "created_at", "labelmap_format", "shape", "dtype", "spacing", "geometry", "checksum",
                  "right_size", "left_size", "size_unit", "confidence", "entropy"]
        read_only_fields = fields
