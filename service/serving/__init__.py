"""Serving: gRPC server options, and the supervisor that runs several worker processes."""
