"""Serializers of the review stage: the project review policy."""

from __future__ import annotations

from rest_framework import serializers

from .models import ReviewPolicy


class ReviewPolicySerializer(serializers.ModelSerializer):
    class Meta:
        model = ReviewPolicy
        fields = ["project", "review_fraction", "auto_approve_confidence", "double_read_fraction",
                  "agreement_threshold", "updated_at"]
        read_only_fields = ["project", "updated_at"]
