"""Code the tests share: paths and scratch projects, free ports, loopback HTTP/SMTP servers,
process checks and the local Airflow of the system tests.

Test modules import shared code from here (and fixtures from tests/conftest.py), never from
one another.
"""
