"""The single writer's index: catalog (SQLite truth), hash and vector indexes, and the verdict."""
