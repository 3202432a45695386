package offload

// Test helpers: Store wrappers that slow reads down or make them fail, for
// this package's tests and for the tests of the packages built on it (the
// scheduler's). They are small enough to ship in the package.

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// SlowStore is a test helper: a Store that waits Delay before each read of
// Store, honouring ctx while it waits. Close closes Store.
type SlowStore struct {
	Store
	Delay time.Duration
}

// ReadAt waits Delay, then reads from the wrapped store.
func (s SlowStore) ReadAt(ctx context.Context, dst []byte, off int64) error {
	if err := sleepCtx(ctx, s.Delay, "slow store", len(dst), off); err != nil {
		return err
	}
	return s.Store.ReadAt(ctx, dst, off)
}

// Fault is what a FaultStore does to its faulty read.
type Fault int

const (
	// FaultError fails the read with an error wrapping ErrInjected.
	FaultError Fault = iota
	// FaultShort fills the first half of dst (rounded down to Align, so an
	// O_DIRECT store accepts the part) and fails with an error wrapping
	// ErrShortRead and ErrInjected.
	FaultShort
	// FaultCorrupt completes the read and reports success, with the first
	// byte of dst inverted.
	FaultCorrupt
)

func (f Fault) String() string {
	switch f {
	case FaultError:
		return "error"
	case FaultShort:
		return "short"
	case FaultCorrupt:
		return "corrupt"
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// ErrInjected is wrapped by the errors a FaultStore makes up.
var ErrInjected = errors.New("offload: injected fault")

// FaultStore is a test helper: a Store whose At-th read (counting from 1,
// across all goroutines) goes wrong as Fault says, and all later ones too
// if Sticky is set; the other reads pass through. Close closes the wrapped
// store.
type FaultStore struct {
	Store
	Fault  Fault
	At     int64
	Sticky bool

	reads atomic.Int64
}

// NewFaultStore returns a store whose at-th read goes wrong.
func NewFaultStore(s Store, fault Fault, at int64) *FaultStore {
	return &FaultStore{Store: s, Fault: fault, At: at}
}

// Reads is how many reads have started.
func (s *FaultStore) Reads() int64 { return s.reads.Load() }

// ReadAt reads from the wrapped store, unless this is the faulty read.
func (s *FaultStore) ReadAt(ctx context.Context, dst []byte, off int64) error {
	n := s.reads.Add(1)
	if n < s.At || (n > s.At && !s.Sticky) {
		return s.Store.ReadAt(ctx, dst, off)
	}
	switch s.Fault {
	case FaultShort:
		half := len(dst) / 2 / Align * Align
		if err := s.Store.ReadAt(ctx, dst[:half], off); err != nil {
			return err
		}
		return fmt.Errorf("%w (read %d): %w", ErrInjected, n, shortRead("fault store", len(dst), off, half))
	case FaultCorrupt:
		if err := s.Store.ReadAt(ctx, dst, off); err != nil {
			return err
		}
		if len(dst) > 0 {
			dst[0] = ^dst[0]
		}
		return nil
	default:
		return readErr("fault store", len(dst), off, fmt.Errorf("%w (read %d)", ErrInjected, n))
	}
}
