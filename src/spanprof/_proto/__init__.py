"""Generated protobuf modules for pprof (perftools.profiles); see README.md here."""
