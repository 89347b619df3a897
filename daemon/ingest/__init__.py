"""From file-system events to queued jobs: the watcher and the walk of the roots."""
