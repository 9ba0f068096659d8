// Package keyward holds what a Go program needs besides the generated stubs of keyward/v1:
// the decoding of keyward's error details.
package keyward

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the ErrorInfo.Domain of every keyward error.
const ErrorDomain = "keyward.v1"

// ErrorDetails are the details of a keyward error. Every error carries an ErrorInfo
// (Reason such as "API_KEY_NOT_FOUND", Metadata such as the id); INVALID_ARGUMENT also a
// BadRequest naming each field that was refused and how to fix it.
type ErrorDetails struct {
	Code       codes.Code
	Message    string
	Info       *errdetails.ErrorInfo  // nil when the error did not come from keyward
	BadRequest *errdetails.BadRequest // nil unless the error is INVALID_ARGUMENT
}

// Details decodes the google.rpc.Status that keyward sends in the grpc-status-details-bin
// trailer of a failed call: grpc-go has already parsed the trailer into err, and
// status.Details unpacks each detail by its type URL (a detail of another type is skipped).
func Details(err error) ErrorDetails {
	st := status.Convert(err)
	out := ErrorDetails{Code: st.Code(), Message: st.Message()}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			out.Info = d
		case *errdetails.BadRequest:
			out.BadRequest = d
		}
	}
	return out
}

// Reason is the ErrorInfo reason of a keyward error, or "" for any other error.
func (d ErrorDetails) Reason() string {
	return d.Info.GetReason()
}

// FieldViolations maps each refused field (for example "api_key.name") to why it was refused.
func (d ErrorDetails) FieldViolations() map[string]string {
	fields := map[string]string{}
	for _, v := range d.BadRequest.GetFieldViolations() {
		fields[v.GetField()] = v.GetDescription()
	}
	return fields
}
