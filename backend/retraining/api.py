"""REST API of retraining: champion history, manual promotion and roll-back (ML engineers). Views stay thin."""

from __future__ import annotations

import logging
from typing import Any

from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import Membership, Role
from modeling.models import ModelVersion

from . import promotion
from .models import ChampionChange
from .serializers import ChampionChangeSerializer, PromoteSerializer, RollbackSerializer

logger = logging.getLogger(__name__)


def require_ml_engineer(user: Any) -> None:
    """Champions are global per modality: an ML engineer of any project (or a superuser) may change them."""
    if not (user.is_superuser or Membership.objects.filter(user=user, role=Role.ML_ENGINEER).exists()):
        raise PermissionDenied("only ML engineers may change a champion model")


class ChampionViewSet(viewsets.ReadOnlyModelViewSet):
    """Champion changes, newest first; ``promote`` and ``rollback`` swap the champion atomically."""

    queryset = ChampionChange.objects.select_related("previous", "champion", "actor")
    serializer_class = ChampionChangeSerializer
    permission_classes = [IsAuthenticated]
    filterset_fields = ["modality", "kind"]

    @action(detail=False, methods=["post"], serializer_class=PromoteSerializer)
    def promote(self, request: Request) -> Response:
        """Make a model version champion by hand (``model_version``, ``reason``)."""
        require_ml_engineer(request.user)
        body = PromoteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key = body.validated_data["model_version"]
        version = (ModelVersion.objects.filter(name=key).first()
                   or (ModelVersion.objects.filter(pk=int(key)).first() if key.isdigit() else None))
        if version is None:
            raise ValidationError({"model_version": f"no model version named {key!r}"})
        return self._swap(lambda: promotion.swap_champion(version, request.user, ChampionChange.Kind.MANUAL,
                                                           body.validated_data["reason"]))

    @action(detail=False, methods=["post"], serializer_class=RollbackSerializer)
    def rollback(self, request: Request) -> Response:
        """Give the champion role back to the previous champion of a ``modality``."""
        require_ml_engineer(request.user)
        body = RollbackSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._swap(lambda: promotion.rollback(body.validated_data["modality"], request.user,
                                                     body.validated_data["reason"]))

    def _swap(self, swap: Any) -> Response:
        try:
            change = swap()
        except promotion.PromotionError as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        return Response(ChampionChangeSerializer(change).data, status=status.HTTP_201_CREATED)
