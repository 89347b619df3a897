"""dupwatch daemon: watcher, queue producer, the single-writer index and catalog, notifications, CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dupwatch")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+src"
