package offload

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

func TestSlowStore(t *testing.T) {
	data := pattern(Align)
	s := SlowStore{Store: NewMemStore(data), Delay: 20 * time.Millisecond}
	dst := make([]byte, Align)
	start := time.Now()
	if err := s.ReadAt(context.Background(), dst, 0); err != nil || !bytes.Equal(dst, data) {
		t.Fatalf("read: %v", err)
	}
	if d := time.Since(start); d < s.Delay {
		t.Fatalf("read took %v, want >= %v", d, s.Delay)
	}
	// Cancelled while waiting: returns promptly with ctx's error.
	s.Delay = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := s.ReadAt(ctx, dst, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled read: %v, want DeadlineExceeded", err)
	}
}

func TestFaultStore(t *testing.T) {
	data := pattern(2 * Align)
	for _, tc := range []struct {
		fault  Fault
		sticky bool
		want   []error // per read, 1..4; nil entries succeed
		bad    []bool  // per read: bytes differ from the data
	}{
		{FaultError, false, []error{nil, ErrInjected, nil, nil}, []bool{false, true, false, false}},
		{FaultError, true, []error{nil, ErrInjected, ErrInjected, ErrInjected}, []bool{false, true, true, true}},
		{FaultShort, false, []error{nil, ErrShortRead, nil, nil}, []bool{false, true, false, false}},
		{FaultCorrupt, false, []error{nil, nil, nil, nil}, []bool{false, true, false, false}},
	} {
		t.Run(tc.fault.String(), func(t *testing.T) {
			s := NewFaultStore(NewMemStore(data), tc.fault, 2)
			s.Sticky = tc.sticky
			for i, want := range tc.want {
				dst := make([]byte, len(data))
				err := s.ReadAt(context.Background(), dst, 0)
				if !errors.Is(err, want) || (want == nil) != (err == nil) {
					t.Fatalf("read %d: %v, want %v", i+1, err, want)
				}
				if bad := !bytes.Equal(dst, data); bad != tc.bad[i] {
					t.Fatalf("read %d: corrupt %v, want %v", i+1, bad, tc.bad[i])
				}
			}
			if s.Reads() != 4 {
				t.Fatalf("Reads %d, want 4", s.Reads())
			}
		})
	}
	// A short read's partial fill is aligned, so a FileStore accepts it.
	fs, err := OpenFileStore(writeFile(t, data))
	if err != nil {
		t.Fatal(err)
	}
	s := NewFaultStore(fs, FaultShort, 1)
	defer s.Close()
	dst := alignedBuf(len(data))
	if err := s.ReadAt(context.Background(), dst, 0); !errors.Is(err, ErrShortRead) || !errors.Is(err, ErrInjected) || !bytes.Equal(dst[:Align], data[:Align]) {
		t.Fatalf("short read over a file: %v", err)
	}
}
