"""Switchboard: a production server for LLM agents, called over gRPC.

Importing the package turns off gRPC's fork handlers (``GRPC_ENABLE_FORK_SUPPORT=false``,
unless the environment says otherwise) before anything imports grpc: every process
Switchboard starts (MCP servers over stdio, ``serve --workers``) is fork-then-exec, which
needs no handlers, and with them grpc logged "Other threads are currently calling into gRPC,
skipping fork() handlers" at every MCP server start (grpc's fork support:
https://github.com/grpc/grpc/blob/master/doc/fork_support.md).
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
