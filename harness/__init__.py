"""The process harness: the emulator, Airflow stacks (standalone and Celery) and the services they run beside,
each started on free loopback ports and stopped with everything it started.

Used by the demos (``demo/``), the end-to-end tests and the benchmarks; a repository package, not shipped
in the wheel.
"""
