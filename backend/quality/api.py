"""REST API of quality: the QC flags of revisions, ordered by review priority."""

from __future__ import annotations

from django.db.models import QuerySet
from django_filters import rest_framework as filters
from rest_framework import viewsets
from rest_framework.permissions import IsAuthenticated

from accounts.permissions import project_ids_for

from .models import QCSummary
from .serializers import QCSummarySerializer


class QCSummaryFilter(filters.FilterSet):
    project = filters.NumberFilter(field_name="revision__project_id")
    study = filters.NumberFilter(field_name="revision__series__study_id")
    series = filters.NumberFilter(field_name="revision__series_id")
    flagged = filters.BooleanFilter(method="filter_flagged", label="only revisions with raised flags")

    class Meta:
        model = QCSummary
        fields = ["project", "study", "series", "modality"]

    def filter_flagged(self, queryset: QuerySet, name: str, value: bool) -> QuerySet:
        return queryset.filter(flagged_count__gt=0) if value else queryset.filter(flagged_count=0)


class QCSummaryViewSet(viewsets.ReadOnlyModelViewSet):
    """QC per revision (``/api/qc/<revision id>/``), highest review priority first."""

    queryset = QCSummary.objects.select_related("revision").prefetch_related("revision__qc_flags")
    serializer_class = QCSummarySerializer
    permission_classes = [IsAuthenticated]
    filterset_class = QCSummaryFilter
    lookup_field = "revision"
    ordering_fields = ["priority", "computed_at"]

    def get_queryset(self) -> QuerySet:
        return super().get_queryset().filter(revision__project_id__in=project_ids_for(self.request.user))
