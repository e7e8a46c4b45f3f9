"""Orders: the model (``models``) and the HTTP routes (``routes``)."""
