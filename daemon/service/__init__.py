"""The running daemon: its main loop, private Redis, the `run` process tree, systemd notify."""
