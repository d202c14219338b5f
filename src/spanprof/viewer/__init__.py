"""The local web viewer's frontend: a prebuilt, committed bundle.

``STATIC_DIR`` holds ``index.html``, ``bundle.js``, ``bundle.css`` and
``BUILD_INFO``, built from ``viewer/`` by ``scripts/build_viewer.sh`` (checked by
``scripts/check_viewer_bundle.sh``), so installing spanprof needs no Node.
``index.html`` documents the JSON API it calls and how to inline it into one
self-contained HTML file.
"""

import pathlib

STATIC_DIR = pathlib.Path(__file__).parent / "static"
