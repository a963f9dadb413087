"""Workbench: the server-rendered pages of the annotators (log in, my queue, the viewer page)."""
