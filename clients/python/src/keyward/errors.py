"""Decodes the google.rpc.Status keyward sends with every error."""

from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2, status_pb2

#: The ErrorInfo domain of every keyward error.
ERROR_DOMAIN = "keyward.v1"

_DETAILS_TRAILER = "grpc-status-details-bin"


@dataclass
class ErrorDetails:
    """The details of a keyward error.

    Every error carries an ErrorInfo (a reason such as API_KEY_NOT_FOUND, metadata such as
    the id); INVALID_ARGUMENT also a BadRequest naming each refused field and how to fix it.
    """

    code: grpc.StatusCode
    message: str
    #: None when the error did not come from keyward (a transport error, say).
    info: error_details_pb2.ErrorInfo | None = None
    #: None unless the error is INVALID_ARGUMENT.
    bad_request: error_details_pb2.BadRequest | None = None
    #: Each refused field (for example "api_key.name") with why it was refused.
    field_violations: dict[str, str] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        """The ErrorInfo reason, or "" for an error that did not come from keyward."""
        return self.info.reason if self.info is not None else ""


def error_details(err: grpc.RpcError) -> ErrorDetails:
    """Decodes the google.rpc.Status in the grpc-status-details-bin trailer of a failed call.

    Details of other types than ErrorInfo and BadRequest are skipped.
    """
    out = ErrorDetails(code=err.code(), message=err.details() or "")
    trailer = dict(err.trailing_metadata() or ()).get(_DETAILS_TRAILER)
    if trailer is None:
        return out
    for detail in status_pb2.Status.FromString(trailer).details:
        info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
        if detail.Unpack(info):
            out.info = info
        elif detail.Unpack(bad):
            out.bad_request = bad
            out.field_violations = {v.field: v.description for v in bad.field_violations}
    return out
