"""Administration by project leads: project settings, members and roles, task assignment, leases, audit log.

Pages under ``/manage/`` and ``manage.py`` commands, both thin over :mod:`administration.services`.
Sits right of annotation in the data flow (it imports accounts, imaging and annotation; nothing imports it).
"""
