"""``python -m nanoedge`` runs the CLI."""

from nanoedge.cli.main import main

if __name__ == "__main__":
    main()
