"""``python -m spanprof``: the same as the ``spanprof`` command."""

from spanprof.cli import entry

if __name__ == "__main__":
    entry()
