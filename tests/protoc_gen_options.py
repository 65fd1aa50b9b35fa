"""A protoc/buf plugin for tests: writes ``options.json``, the options each file to generate
arrived with (what managed mode set), and whether it carries source info (comments)."""

from __future__ import annotations

import json
import sys

from google.protobuf.compiler import plugin_pb2


def main() -> None:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    wanted = set(request.file_to_generate)
    found = {}
    for proto in request.proto_file:
        if proto.name in wanted:
            options = proto.options
            found[proto.name] = {
                "go_package": options.go_package,
                "java_package": options.java_package,
                "java_multiple_files": options.java_multiple_files,
                "csharp_namespace": options.csharp_namespace,
                "comments": sum(
                    bool(loc.leading_comments) for loc in proto.source_code_info.location
                ),
            }
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    response.file.add(name="options.json", content=json.dumps(found, indent=1, sort_keys=True))
    sys.stdout.buffer.write(response.SerializeToString())


if __name__ == "__main__":
    main()
