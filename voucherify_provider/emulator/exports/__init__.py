"""Exports: the model (``models``), the files it serves (``files``) and the HTTP routes (``routes``)."""
