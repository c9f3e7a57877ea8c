"""The shells: the `stress-runner` command line. ``main`` parses and dispatches; each
command imports what it needs when it runs, so `stress-runner run` never pays for the service."""
