package idepool

import (
	"errors"
	"fmt"
	"net/http"
)

// Code classifies an error. The string is what clients see in the error
// envelope; HTTPStatus is its status, from the one table below.
type Code string

// Error codes. The first group is the original system's, kept for its
// clients. Their statuses are in codeTable, not here.
const (
	ENotFound           Code = "CONTAINER_NOT_FOUND"
	EInvalidBucket      Code = "INVALID_S3_BUCKET"
	EInvalid            Code = "INVALID_PARAMETER"
	EUnauthorized       Code = "AUTHENTICATION_FAILED"
	EStartFailed        Code = "CONTAINER_START_FAILED"
	EStopFailed         Code = "CONTAINER_STOP_FAILED"
	ERuntime            Code = "RUNTIME_ERROR" // the runtime failed an operation
	EInternal           Code = "INTERNAL_ERROR"
	ECapacity           Code = "RESOURCE_LIMIT_EXCEEDED"
	ERouteNotFound      Code = "NOT_FOUND"
	ERateLimited        Code = "RATE_LIMIT_EXCEEDED"
	ETooLarge           Code = "PAYLOAD_TOO_LARGE"
	EUnknownProfile     Code = "UNKNOWN_PROFILE"
	EConflict           Code = "CONFLICT"
	EExists             Code = "ALREADY_EXISTS"
	EUnavailable        Code = "SERVICE_UNAVAILABLE"
	ETimeout            Code = "TIMEOUT"
	EMethodNotAllowed   Code = "METHOD_NOT_ALLOWED"
	EUnsupportedMedia   Code = "UNSUPPORTED_MEDIA_TYPE"
	EQueueFull          Code = "QUEUE_FULL"
	ELimitExceeded      Code = "LIMIT_EXCEEDED" // a per-user or per-profile maximum
	EForbidden          Code = "FORBIDDEN"
	ENotReady           Code = "NOT_READY"
	EAgentUnavailable   Code = "AGENT_UNAVAILABLE"
	EMisconfigured      Code = "MISCONFIGURED"
	EClientClosed       Code = "CLIENT_CLOSED_REQUEST"
	ERuntimeUnreachable Code = "DOCKER_ERROR" // the runtime cannot be reached; the original's name for it
	EBadGateway         Code = "BAD_GATEWAY"  // a container's workload did not answer
)

// StatusClientClosed is nginx's status for a request its client gave up;
// net/http has no name for it.
const StatusClientClosed = 499

// codeTable is THE table from an error code to its HTTP status, for the
// API, the router and the dashboard alike. bare marks the one code per
// status that a bare answer of that status (no envelope, e.g. a proxy's
// page) is taken to mean: CodeForStatus.
var codeTable = [...]struct {
	code   Code
	status int
	bare   bool
}{
	{ENotFound, http.StatusNotFound, false},
	{EInvalidBucket, http.StatusBadRequest, false},
	{EInvalid, http.StatusBadRequest, true},
	{EUnauthorized, http.StatusUnauthorized, true},
	{EStartFailed, http.StatusInternalServerError, false},
	{EStopFailed, http.StatusInternalServerError, false},
	{ERuntime, http.StatusInternalServerError, false},
	{EInternal, http.StatusInternalServerError, true},
	{ECapacity, http.StatusServiceUnavailable, false},
	{ERouteNotFound, http.StatusNotFound, true},
	{ERateLimited, http.StatusTooManyRequests, true},
	{ETooLarge, http.StatusRequestEntityTooLarge, true},
	{EUnknownProfile, http.StatusBadRequest, false},
	{EConflict, http.StatusConflict, true},
	{EExists, http.StatusConflict, false},
	{EUnavailable, http.StatusServiceUnavailable, true},
	{ETimeout, http.StatusGatewayTimeout, true},
	{EMethodNotAllowed, http.StatusMethodNotAllowed, true},
	{EUnsupportedMedia, http.StatusUnsupportedMediaType, true},
	{EQueueFull, http.StatusServiceUnavailable, false},
	{ELimitExceeded, http.StatusTooManyRequests, false},
	{EForbidden, http.StatusForbidden, true},
	{ENotReady, http.StatusConflict, false},
	{EAgentUnavailable, http.StatusServiceUnavailable, false},
	{EMisconfigured, http.StatusInternalServerError, false},
	{EClientClosed, StatusClientClosed, true},
	{ERuntimeUnreachable, http.StatusServiceUnavailable, false},
	{EBadGateway, http.StatusBadGateway, true},
}

// HTTPStatus returns the HTTP status of c: 500 for a code not in the table.
func (c Code) HTTPStatus() int {
	for _, e := range codeTable {
		if e.code == c {
			return e.status
		}
	}
	return http.StatusInternalServerError
}

// Codes returns every error code, in the table's order.
func Codes() []Code {
	out := make([]Code, len(codeTable))
	for i, e := range codeTable {
		out[i] = e.code
	}
	return out
}

// CodeForStatus is the inverse of HTTPStatus for an answer that carried no
// code: the table's bare code of status, else INVALID_PARAMETER for another
// 4xx and INTERNAL_ERROR for anything else.
func CodeForStatus(status int) Code {
	for _, e := range codeTable {
		if e.bare && e.status == status {
			return e.code
		}
	}
	if status >= 400 && status < 500 {
		return EInvalid
	}
	return EInternal
}

// Error is idepool's error: a code, a message safe to show a client, optional
// details, and the underlying cause (never shown to clients).
type Error struct {
	Code    Code
	Message string
	Details map[string]any
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// WrapError returns an *Error with code and message around cause.
func WrapError(code Code, cause error, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Err: cause}
}

// ErrorCode returns the code of the first *Error in err's chain, or
// EInternal for any other non-nil error, or "" for nil.
func ErrorCode(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EInternal
}

// ErrorMessage returns the client-safe message of err: the *Error's message,
// or a generic text for anything else (whose text may hold internals).
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// ErrorDetails returns the details of the first *Error in err's chain.
func ErrorDetails(err error) map[string]any {
	var e *Error
	if errors.As(err, &e) {
		return e.Details
	}
	return nil
}

// IsNotFound reports whether err is coded ENotFound.
func IsNotFound(err error) bool { return ErrorCode(err) == ENotFound }
