"""The ``nanoedge`` command line. Each command imports its heavy module only when it runs."""
