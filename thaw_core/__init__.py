"""Shared plumbing every service imports: bus, Redis pod-state store, servers, telemetry.

It imports no service (an import-linter contract in the test suite enforces it).
"""
