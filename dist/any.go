package dist

import (
	"context"
	"errors"
	"fmt"
)

// Any reports, on every rank, whether v is true on any rank (one
// AllReduce of a flag): how ranks agree to stop, or that a step failed
// somewhere.
func Any(ctx context.Context, c Comm, v bool) (bool, error) {
	flag := []float32{0}
	if v {
		flag[0] = 1
	}
	if err := c.AllReduce(ctx, flag); err != nil {
		return false, err
	}
	return flag[0] > 0, nil
}

// Agree returns nil on every rank if err is nil on every rank, else an
// error on every rank (this rank's own, or one saying another rank
// failed at what): a collective step that some ranks could not do fails
// for all, and none is left waiting for the others.
func Agree(ctx context.Context, c Comm, what string, err error) error {
	failed, cerr := Any(ctx, c, err != nil)
	switch {
	case cerr != nil:
		return errors.Join(err, fmt.Errorf("dist: %s: %w", what, cerr))
	case err != nil:
		return err
	case failed:
		return fmt.Errorf("dist: %s failed on another rank (see its error)", what)
	}
	return nil
}
