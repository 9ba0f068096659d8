"""keyward's gRPC API for Python.

The generated messages and stubs are in keyward.v1 (made by `buf generate --template
clients/python/buf.gen.yaml`); error_details decodes the details of a failed call.
"""

from keyward.errors import ERROR_DOMAIN, ErrorDetails, error_details

__all__ = ["ERROR_DOMAIN", "ErrorDetails", "error_details"]
