"""Code the tests share, and only that: no fixtures (tests/conftest.py holds those) and no tests.

Test modules import helpers from here, never from one another or from conftest (whose import sets up the
test AIRFLOW_HOME, so it must stay pytest's to load).
"""
