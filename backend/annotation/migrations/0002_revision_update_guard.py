"""PostgreSQL trigger: a stored mask revision cannot change except its ``status`` (append-only lineage).

The ORM refuses such updates already (``MaskRevision.save``); the trigger also stops raw SQL and
queryset ``update()``. Deletes stay possible at the database level so that deleting a series
(a project admin's action) still cascades; the ORM refuses deleting revisions themselves.
Other databases (SQLite for the demo) rely on the ORM guard only.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION annotation_maskrevision_append_only() RETURNS trigger AS $$
BEGIN
    IF (to_jsonb(NEW) - 'status') IS DISTINCT FROM (to_jsonb(OLD) - 'status') THEN
        RAISE EXCEPTION 'mask revision % is append-only: only its status may change', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS annotation_maskrevision_append_only ON annotation_maskrevision;
CREATE TRIGGER annotation_maskrevision_append_only BEFORE UPDATE ON annotation_maskrevision
    FOR EACH ROW EXECUTE FUNCTION annotation_maskrevision_append_only();
"""

DROP = """
DROP TRIGGER IF EXISTS annotation_maskrevision_append_only ON annotation_maskrevision;
DROP FUNCTION IF EXISTS annotation_maskrevision_append_only();
"""


def _run(sql: str) -> Any:
    def apply(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql, params=None)  # no placeholders: the %s in RAISE stay as they are

    return apply


class Migration(migrations.Migration):
    dependencies = [("annotation", "0001_initial")]

    operations = [migrations.RunPython(_run(CREATE), _run(DROP))]
