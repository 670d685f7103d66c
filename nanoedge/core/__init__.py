"""Base layer: errors, the package manifest, atomic writes, sizes, limits, settings, integrity.
May import only the Python standard library, nothing else of ours (docs/architecture.md).

Every stage (export, quantize, targets, runtime, the CLI) builds on these modules, so they
stay small and free of optional dependencies.
"""
