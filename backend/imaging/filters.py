"""django-filter filter sets for the imaging API."""

from __future__ import annotations

import django_filters

from .models import Instance, Patient, Series, Study, Upload


class PatientFilter(django_filters.FilterSet):
    class Meta:
        model = Patient
        fields = {"project": ["exact"], "pseudonym": ["exact", "icontains"]}


class StudyFilter(django_filters.FilterSet):
    class Meta:
        model = Study
        fields = {"project": ["exact"], "patient": ["exact"], "study_instance_uid": ["exact"], "study_date": ["exact", "gte", "lte"]}


class SeriesFilter(django_filters.FilterSet):
    patient = django_filters.NumberFilter(field_name="study__patient")

    class Meta:
        model = Series
        fields = {
            "project": ["exact"], "study": ["exact"], "modality": ["exact"], "series_instance_uid": ["exact"],
            "source_format": ["exact"], "burned_in_annotation": ["exact"],
        }


class InstanceFilter(django_filters.FilterSet):
    class Meta:
        model = Instance
        fields = {"project": ["exact"], "series": ["exact"], "sop_instance_uid": ["exact"]}


class UploadFilter(django_filters.FilterSet):
    class Meta:
        model = Upload
        fields = {"project": ["exact"]}
