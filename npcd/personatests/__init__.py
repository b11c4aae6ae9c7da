"""Persona tests: scripted conversations with expectations, run through a real npcd (`npcd test`).

* `spec`: the YAML test files, checked with file:line for every mistake.
* `runner`: runs them over gRPC against an in-process daemon; JUnit XML for CI.
"""
