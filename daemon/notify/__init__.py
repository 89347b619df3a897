"""Where verdicts go: the webhook outbox and the scan/event-log sinks."""
