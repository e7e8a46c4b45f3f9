"""The demos: ``make demo`` (``python -m demo``) and ``make demo-cluster`` (``python -m demo.cluster``), thin users
of the process harness (:mod:`harness`)."""
