"""REST API of modeling: model registry, proposal status, re-running proposals. Views stay thin."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from django.db.models import Q, QuerySet
from django_filters import rest_framework as filters
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import Role
from accounts.permissions import has_role, project_ids_for
from imaging.models import Series, Study

from . import services
from .models import ModelVersion, ProposalJob
from .serializers import ModelVersionSerializer, ProposalJobSerializer, RerunSerializer

logger = logging.getLogger(__name__)

#: Who may re-run proposals with another model version.
RERUN_ROLES: frozenset[str] = frozenset({Role.ML_ENGINEER})


class ModelVersionViewSet(viewsets.ReadOnlyModelViewSet):
    """Registered model versions (global registry; any signed-in user may read it)."""

    queryset = ModelVersion.objects.all()
    serializer_class = ModelVersionSerializer
    permission_classes = [IsAuthenticated]
    filterset_fields = ["modality", "status"]


class ProposalJobFilter(filters.FilterSet):
    study = filters.NumberFilter(field_name="series__study_id")

    class Meta:
        model = ProposalJob
        fields = ["project", "study", "series", "instance", "status", "modality", "model_version"]


class ProposalJobViewSet(viewsets.ReadOnlyModelViewSet):
    """Proposal jobs of the projects the user belongs to; filter by ``study``, ``series``, ``status``..."""

    queryset = ProposalJob.objects.select_related("model_version", "series")
    serializer_class = ProposalJobSerializer
    permission_classes = [IsAuthenticated]
    filterset_class = ProposalJobFilter

    def get_queryset(self) -> QuerySet:
        return super().get_queryset().filter(project_id__in=project_ids_for(self.request.user))

    @action(detail=False, methods=["get"])
    def summary(self, request: Request) -> Response:
        """Per-series proposal status of a ``study`` or ``series``: job counts by status and ``ready``."""
        jobs = self.filter_queryset(self.get_queryset())
        if not {"study", "series"} & set(request.query_params):
            raise ValidationError({"detail": "give ?study=<id> or ?series=<id>"})
        by_series: dict[int, Counter] = {}
        for series_id, job_status in jobs.values_list("series_id", "status"):
            by_series.setdefault(series_id, Counter())[job_status] += 1
        rows = [{"series": sid, "counts": dict(counts), "total": sum(counts.values()),
                 "ready": counts.get("succeeded", 0) == sum(counts.values())}
                for sid, counts in sorted(by_series.items())]
        return Response({"series": rows, "ready": all(r["ready"] for r in rows) and bool(rows)})

    @action(detail=False, methods=["post"], serializer_class=RerunSerializer)
    def rerun(self, request: Request) -> Response:
        """Queue proposals of a series or a study with another model version (ML engineers only)."""
        body = RerunSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        version = _model_version(body.validated_data["model_version"])
        target: Series | Study = _visible(request, Series if "series" in body.validated_data else Study,
                                          body.validated_data.get("series") or body.validated_data.get("study"))
        if not has_role(request.user, target.project_id, RERUN_ROLES):
            raise PermissionDenied("only the project's ML engineers may re-run proposals")
        try:
            if isinstance(target, Series):
                jobs = services.queue_proposals_for_series(target, version, request.user, retry_failed=True)
            else:
                jobs = services.queue_proposals_for_study(target, version, request.user)
        except services.ModalityMismatchError as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        logger.info("user %s re-ran proposals with %s: %d job(s)", request.user.pk, version.name, len(jobs))
        current = self.get_queryset().filter(pk__in=[job.pk for job in jobs]).order_by("id")
        return Response(ProposalJobSerializer(current, many=True).data, status=status.HTTP_202_ACCEPTED)


def _model_version(key: str) -> ModelVersion:
    query = Q(name=key) | (Q(pk=int(key)) if key.isdigit() else Q())
    version = ModelVersion.objects.filter(query).first()
    if version is None:
        raise ValidationError({"model_version": f"no model version named {key!r}"})
    return version


def _visible(request: Request, model: Any, pk: int) -> Any:
    obj = model.objects.filter(pk=pk, project_id__in=project_ids_for(request.user)).first()
    if obj is None:
        raise NotFound(f"{model.__name__.lower()} {pk} not found")
    return obj
