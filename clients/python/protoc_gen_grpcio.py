"""A buf local plugin that runs the pinned grpcio-tools on what buf compiled.

buf can call protoc's built-in Python generators only through a protoc binary, and
grpcio-tools ships protoc and the gRPC Python generator as a Python module, not as binaries;
so this plugin hands buf's request to grpc_tools.protoc as a descriptor set and returns the
_pb2.py, _pb2.pyi and _pb2_grpc.py files it writes. Run it with the Python that has
grpcio-tools (see buf.gen.yaml).
"""

import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def main():
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL)
    with tempfile.TemporaryDirectory(prefix="protoc-gen-grpcio-") as tmp:
        descriptors = Path(tmp) / "descriptors.binpb"
        descriptors.write_bytes(descriptor_pb2.FileDescriptorSet(file=request.proto_file).SerializeToString())
        out = Path(tmp) / "out"
        out.mkdir()
        args = ["grpc_tools.protoc", f"--descriptor_set_in={descriptors}",
                f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}",
                *request.file_to_generate]
        if protoc.main(args) != 0:
            response.error = f"grpc_tools.protoc failed on {list(request.file_to_generate)}"
        else:
            for path in sorted(p for p in out.rglob("*") if p.is_file()):
                response.file.add(name=str(path.relative_to(out)), content=path.read_text())
    sys.stdout.buffer.write(response.SerializeToString())


if __name__ == "__main__":
    main()
