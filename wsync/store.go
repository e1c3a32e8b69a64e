package wsync

import (
	"context"
	"errors"
	"io"
	"time"
)

// Errors a Store reports so the engine can tell them apart.
var (
	// ErrPreconditionFailed: a conditional write or delete found the object
	// changed (If-Match) or already present (If-None-Match).
	ErrPreconditionFailed = errors.New("precondition failed: the object changed concurrently")
	// ErrNotFound: no object under that key.
	ErrNotFound = errors.New("object not found")
	// ErrConditionsUnsupported: the server rejected a conditional header as
	// not implemented; the engine then falls back to unconditional writes
	// checked by re-listing.
	ErrConditionsUnsupported = errors.New("conditional writes not supported by the server")
	// ErrNoBucket: the bucket does not exist.
	ErrNoBucket = errors.New("no such bucket")
)

// ObjectInfo is one object as a listing or a write reports it.
type ObjectInfo struct {
	Key  string
	ETag string // without quotes
	Size int64
	// ModTime is the server's Last-Modified (informational).
	ModTime time.Time
	// Epoch is the owner epoch its writer stamped on it (S3Config.Epoch;
	// 0: unknown, as for objects written by anything but an agent). Get
	// returns it; List does not.
	Epoch int64
}

// Condition guards a write or delete. The zero value means unconditional.
type Condition struct {
	// IfMatch: only if the object's ETag is this one.
	IfMatch string
	// IfNoneMatch: only if no object exists under the key (create only).
	IfNoneMatch bool
}

// Store is the small object-store surface the engine needs.
type Store interface {
	// List returns every object under prefix.
	List(ctx context.Context, prefix string) ([]ObjectInfo, error)
	// Get reads length bytes from offset (length < 0: to the end).
	Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, ObjectInfo, error)
	// Put writes size bytes from r under key, using multipart upload for
	// large bodies, honouring cond where the server supports it.
	Put(ctx context.Context, key string, r io.ReaderAt, size int64, cond Condition) (ObjectInfo, error)
	// Delete removes key (cond.IfMatch honoured where supported). A missing
	// object is not an error.
	Delete(ctx context.Context, key string, cond Condition) error
}
