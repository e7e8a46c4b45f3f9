"""The one-command demo (``make demo``) and the process helpers the end-to-end tests share."""
