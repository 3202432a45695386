package offload

import (
	"fmt"
	"strings"
	"testing"
)

func TestEvictors(t *testing.T) {
	// Steps: uN (Unused slot N, holding expert N), sN (Used: a demand of
	// expert N, in slot N), tN (Taken), v (Victim; the wanted victims are
	// listed in order, "-" for none).
	for _, tc := range []struct {
		name    string
		ev      func() Evictor
		steps   string
		victims string
	}{
		{"lru empty", func() Evictor { return NewLRU() }, "v", "-"},
		{"lru oldest first", func() Evictor { return NewLRU() }, "u1 u2 u3 v v v v", "1 2 3 -"},
		{"lru used leaves", func() Evictor { return NewLRU() }, "u1 u2 u3 s1 v v", "2 3"},
		{"lru taken leaves", func() Evictor { return NewLRU() }, "u1 u2 u3 t2 v v v", "1 3 -"},
		{"lru reused goes last", func() Evictor { return NewLRU() }, "u1 u2 s1 u1 v v", "2 1"},
		{"lru used unknown", func() Evictor { return NewLRU() }, "s5 u5 v", "5"},
		{"lifo newest first", func() Evictor { return NewLIFO() }, "u1 u2 u3 v v v v", "3 2 1 -"},
		{"lifo used and taken leave", func() Evictor { return NewLIFO() }, "u1 u2 u3 s3 t1 v v", "2 -"},
		{"lifo reused goes first", func() Evictor { return NewLIFO() }, "u1 u2 s1 u1 v v", "1 2"},
		{"lfu fewest demands first", func() Evictor { return NewLFU(0) },
			"s1 s1 s1 s2 s3 s3 u1 u2 u3 v v v v", "2 3 1 -"},
		{"lfu ties: oldest unused", func() Evictor { return NewLFU(0) }, "s1 s2 s3 u3 u1 u2 v v v", "3 1 2"},
		{"lfu taken is no demand", func() Evictor { return NewLFU(0) }, "s1 s2 s2 u1 u2 t1 u1 v v", "1 2"},
		{"lfu counts outlive eviction", func() Evictor { return NewLFU(0) }, "s1 s1 u1 v s2 u2 s1 u1 v", "1 2"},
		// Expert 1's four demands are older than expert 2's two: with a
		// half-life of 2 demands they weigh 1.28 at the end, expert 2's 1.71.
		{"lfu decays", func() Evictor { return NewLFU(2) }, "s1 s1 s1 s1 s2 s2 u1 u2 v", "1"},
		{"lfu without decay", func() Evictor { return NewLFU(-1) }, "s1 s1 s1 s1 s2 s2 u1 u2 v", "2"},
		{"none keeps nothing", func() Evictor { return NoCache{} }, "s1 u1 u2 v", "-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := tc.ev()
			var victims []string
			for _, step := range strings.Fields(tc.steps) {
				var n int
				fmt.Sscanf(step[1:], "%d", &n)
				switch step[0] {
				case 'u':
					if _, none := ev.(NoCache); ev.Unused(n, Key{0, n}) == none {
						t.Fatalf("Unused(%d): only NoCache declines a slot", n)
					}
				case 's':
					ev.Used(n, Key{0, n})
				case 't':
					ev.Taken(n)
				case 'v':
					if slot, ok := ev.Victim(); ok {
						victims = append(victims, fmt.Sprint(slot))
					} else {
						victims = append(victims, "-")
					}
				}
			}
			if got := strings.Join(victims, " "); got != tc.victims {
				t.Fatalf("victims %q, want %q", got, tc.victims)
			}
		})
	}
}
