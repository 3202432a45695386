package safetensors

import "errors"

// Sentinel errors. Every error returned by this package wraps one of them (or
// an *os.PathError / *fs.PathError from the file system), so callers can
// test with errors.Is while the message keeps the details.
var (
	// ErrHeader: the JSON header is malformed or inconsistent (bad JSON,
	// unknown dtype, shape/size mismatch, overlapping tensors, holes, ...).
	ErrHeader = errors.New("safetensors: invalid header")
	// ErrTruncated: the file is shorter than its header says.
	ErrTruncated = errors.New("safetensors: truncated file")
	// ErrNotFound: no tensor of that name.
	ErrNotFound = errors.New("safetensors: tensor not found")
	// ErrDType: a typed view was asked of a tensor of another dtype.
	ErrDType = errors.New("safetensors: wrong dtype")
	// ErrIndex: a sharded checkpoint's index is malformed or disagrees with
	// its shards.
	ErrIndex = errors.New("safetensors: invalid index")
	// ErrClosed: the File, Set or Writer was already closed.
	ErrClosed = errors.New("safetensors: closed")
	// ErrInvalid: a writer was given inconsistent tensors or data (duplicate
	// or reserved names, data of the wrong size, unknown tensor).
	ErrInvalid = errors.New("safetensors: invalid argument")
)
