"""The schema version every message carries in its `v` field."""

SCHEMA_VERSION = 1
