"""``python -m spanprof.cli``."""

from spanprof.cli import entry

if __name__ == "__main__":
    entry()
