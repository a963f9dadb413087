"""Query-string filters of the accounts API."""

from __future__ import annotations

import django_filters

from .models import AuditEntry


class AuditEntryFilter(django_filters.FilterSet):
    """``?project=<id>&action=membership.update&target_type=imaging.project&since=<ISO time>``."""

    project = django_filters.NumberFilter(field_name="project_id")
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = AuditEntry
        fields = ["project", "action", "target_type", "since"]
