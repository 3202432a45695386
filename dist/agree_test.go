package dist

import (
	"errors"
	"slices"
	"testing"
)

// The headers' verdict: every rank reaches the same one from the same
// headers (but for AllToAllV's pairwise counts, judged by the receiver).
func TestAgree(t *testing.T) {
	ar := func(n int64) header { return header{op: opAllReduce, n: n} }
	bc := func(n, root int64) header { return header{op: opBroadcast, n: n, root: root} }
	for _, tc := range []struct {
		name string
		got  []header
		ok   bool
	}{
		{"same", []header{ar(4), ar(4), ar(4)}, true},
		{"one rank", []header{ar(7)}, true},
		{"lengths differ", []header{ar(4), ar(5), ar(4)}, false},
		{"collectives differ", []header{ar(4), bc(4, 0), ar(4)}, false},
		{"invalid on one rank", []header{ar(4), {op: opAllReduce, n: 4, bad: true}}, false},
		{"broadcast", []header{bc(3, 1), bc(3, 1)}, true},
		{"roots differ", []header{bc(3, 0), bc(3, 1)}, false},
		{"root past the ranks", []header{bc(3, 2), bc(3, 2)}, false},
		{"negative root", []header{bc(3, -1), bc(3, -1)}, false},
		{"barriers", []header{{op: opBarrier}, {op: opBarrier}}, true},
		{"split colors may differ", []header{{op: opSplit, n: 0}, {op: opSplit, n: 1}}, true},
		{"alltoallv counts are pairwise", []header{{op: opAllToAllV, count: 1}, {op: opAllToAllV, count: 9}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for me := range tc.got {
				err := agree(me, tc.got)
				if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrMismatch)) {
					t.Fatalf("rank %d: %v", me, err)
				}
			}
		})
	}
}

func TestAgreeCounts(t *testing.T) {
	got := []header{{op: opAllToAllV, count: 2}, {op: opAllToAllV, count: 0}, {op: opAllToAllV, count: 5}}
	sent, err := agreeCounts(1, got, []int{2, 0, 5})
	if err != nil || !slices.Equal(sent, []int{2, 0, 5}) {
		t.Fatalf("agreeing counts: %v %v", sent, err)
	}
	sent, err = agreeCounts(1, got, []int{2, 1, 5})
	if !errors.Is(err, ErrMismatch) || !slices.Equal(sent, []int{2, 0, 5}) {
		t.Fatalf("disagreeing counts: %v %v", sent, err)
	}
}

// A header survives the wire.
func TestHeaderWords(t *testing.T) {
	h := header{op: opReduceScatter, bad: true, n: 1 << 40, root: -3, count: 17}
	w := make([]int64, headerWords)
	h.put(w)
	if g := getHeader(w); g != h {
		t.Fatalf("got %+v, want %+v", g, h)
	}
	if s := opcode(99).String(); s != "opcode(99)" {
		t.Fatalf("unknown opcode prints %q", s)
	}
}
