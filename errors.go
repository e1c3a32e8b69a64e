package idepool

import (
	"errors"
	"fmt"
)

// Code classifies an error. The HTTP API maps each code to a status in one
// table (httpapi); the string is what clients see in the error envelope.
type Code string

// Error codes. The first group is the original system's, kept for its
// clients.
const (
	ENotFound           Code = "CONTAINER_NOT_FOUND"     // 404
	EInvalidBucket      Code = "INVALID_S3_BUCKET"       // 400
	EInvalid            Code = "INVALID_PARAMETER"       // 400
	EUnauthorized       Code = "AUTHENTICATION_FAILED"   // 401
	EStartFailed        Code = "CONTAINER_START_FAILED"  // 500
	EStopFailed         Code = "CONTAINER_STOP_FAILED"   // 500
	ERuntime            Code = "RUNTIME_ERROR"           // 500 (the original's DOCKER_ERROR)
	EInternal           Code = "INTERNAL_ERROR"          // 500
	ECapacity           Code = "RESOURCE_LIMIT_EXCEEDED" // 503
	ERouteNotFound      Code = "NOT_FOUND"               // 404
	ERateLimited        Code = "RATE_LIMIT_EXCEEDED"     // 429
	ETooLarge           Code = "PAYLOAD_TOO_LARGE"       // 413
	EUnknownProfile     Code = "UNKNOWN_PROFILE"         // 400
	EConflict           Code = "CONFLICT"                // 409
	EExists             Code = "ALREADY_EXISTS"          // 409
	EUnavailable        Code = "SERVICE_UNAVAILABLE"     // 503
	ETimeout            Code = "TIMEOUT"                 // 504
	EMethodNotAllowed   Code = "METHOD_NOT_ALLOWED"      // 405
	EUnsupportedMedia   Code = "UNSUPPORTED_MEDIA_TYPE"  // 415
	EQueueFull          Code = "QUEUE_FULL"              // 503
	ELimitExceeded      Code = "LIMIT_EXCEEDED"          // 429 per-user / per-profile maximum
	EForbidden          Code = "FORBIDDEN"               // 403
	ENotReady           Code = "NOT_READY"               // 409
	EAgentUnavailable   Code = "AGENT_UNAVAILABLE"       // 503
	EMisconfigured      Code = "MISCONFIGURED"           // 500
	EClientClosed       Code = "CLIENT_CLOSED_REQUEST"   // 499
	ERuntimeUnreachable Code = "DOCKER_ERROR"            // 503 runtime unreachable (original's code)
	EBadGateway         Code = "BAD_GATEWAY"             // 502 a container's workload did not answer
)

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
