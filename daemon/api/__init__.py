"""The HTTP API, review page and metrics, served in the daemon process."""
