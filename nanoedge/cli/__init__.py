"""The ``nanoedge`` command line. Each command imports its heavy module only when it runs.
May import every layer: export, quantize, runtime, targets, core (docs/architecture.md).
"""
