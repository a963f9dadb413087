"""Django admin for users and memberships, and the audit-log mixin every audited admin uses."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.db import models, transaction
from django.db.models import QuerySet
from django.forms import BaseInlineFormSet, ModelForm
from django.http import HttpRequest

from . import audit
from .models import AuditEntry, Membership, User

#: Never copied into the audit log (secrets and bookkeeping).
AUDIT_EXCLUDED_FIELDS = frozenset({"password", "last_login", "deid_secret"})


def audit_state(obj: models.Model) -> dict[str, Any]:
    """What the audit log keeps of ``obj``: concrete fields (minus secrets) and many-to-many ids."""
    fields = [f.name for f in obj._meta.concrete_fields if f.name not in AUDIT_EXCLUDED_FIELDS]
    state = audit.snapshot(obj, fields)
    if obj.pk is not None:
        for field in obj._meta.many_to_many:
            state[field.name] = sorted(getattr(obj, field.name).values_list("pk", flat=True))
    return state


def stored_state(obj: models.Model) -> dict[str, Any] | None:
    """The audit state of ``obj`` as stored in the database (``None`` when not stored yet)."""
    if obj.pk is None:
        return None
    stored = type(obj)._default_manager.filter(pk=obj.pk).first()
    return audit_state(stored) if stored is not None else None


class AuditedAdminMixin:
    """Write an audit entry for every add, change and deletion made through this admin page.

    Actions are ``<model>.create|update|delete`` with the changed fields before and after (many-to-
    many fields such as a user's groups included). Inline formsets (a user's memberships) are
    audited the same way. The admin runs each save in a transaction, so the entry commits with the
    change. ``audit_project_field`` names the attribute holding the project id (``"pk"`` for a
    project itself).
    """

    audit_project_field = "project_id"

    def _audit(self, request: HttpRequest, obj: models.Model, verb: str,
               before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        if verb == "update":
            before, after = audit.changed(before or {}, after or {})
            if not before and not after:
                return
        audit.record(request.user, f"{obj._meta.model_name}.{verb}", obj,
                     project_id=getattr(obj, self.audit_project_field, None), before=before, after=after)

    def save_model(self, request: HttpRequest, obj: models.Model, form: ModelForm, change: bool) -> None:
        obj._audit_before = stored_state(obj) if change else None  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)  # type: ignore[misc]

    def save_related(self, request: HttpRequest, form: ModelForm, formsets: list, change: bool) -> None:
        """Record after the many-to-many fields and inlines are saved (the admin's last step)."""
        super().save_related(request, form, formsets, change)  # type: ignore[misc]
        obj = form.instance
        verb = "update" if change else "create"
        self._audit(request, obj, verb, getattr(obj, "_audit_before", None), audit_state(obj))

    def save_formset(self, request: HttpRequest, form: ModelForm, formset: BaseInlineFormSet, change: bool) -> None:
        ids = [f.instance.pk for f in formset.forms if f.instance.pk is not None]
        stored = {o.pk: o for o in formset.model._default_manager.filter(pk__in=ids)}
        before = {pk: audit_state(o) for pk, o in stored.items()}
        deleting = [f.instance.pk for f in formset.deleted_forms if f.instance.pk in stored]
        super().save_formset(request, form, formset, change)  # type: ignore[misc]
        for obj in formset.new_objects:
            audit.record(request.user, f"{obj._meta.model_name}.create", obj, after=audit_state(obj))
        for obj, _fields in formset.changed_objects:
            old, new = audit.changed(before[obj.pk], audit_state(obj))
            audit.record(request.user, f"{obj._meta.model_name}.update", obj, before=old, after=new)
        for pk in deleting:
            obj = stored[pk]
            audit.record(request.user, f"{obj._meta.model_name}.delete", obj, before=before[pk])

    def delete_model(self, request: HttpRequest, obj: models.Model) -> None:
        with transaction.atomic():
            self._audit(request, obj, "delete", audit_state(obj), None)
            super().delete_model(request, obj)  # type: ignore[misc]

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        """The admin's bulk "delete selected" action: one entry per object, in one transaction."""
        with transaction.atomic():
            for obj in queryset:
                self._audit(request, obj, "delete", audit_state(obj), None)
            super().delete_queryset(request, queryset)  # type: ignore[misc]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["project"]


@admin.register(User)
class PleuraUserAdmin(AuditedAdminMixin, UserAdmin):
    """Users; changes of staff/superuser status, groups, permissions and memberships are audited."""

    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["user", "project", "role", "created_at"]
    list_filter = ["role", "project"]
    search_fields = ["user__username", "project__name"]
    autocomplete_fields = ["user", "project"]


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Read-only: the audit log is append-only."""

    list_display = ["created_at", "actor_name", "action", "target_type", "target_id", "target_repr", "project_id"]
    list_filter = ["action", "target_type"]
    search_fields = ["actor_name", "target_repr", "target_id", "reason"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False
