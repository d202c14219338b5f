"""Views over the local store: flame-graph trees, summaries, exports and the web viewer.

Views read only what the exporters wrote (the SQLite store in the output directory),
never the sampler, so they work on a recording long after the program exited, or on
one that is still being written.
"""
