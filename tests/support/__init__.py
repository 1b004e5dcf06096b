"""Helpers shared by the test suites: raw HTTP/1.1 clients, servers started for real."""
