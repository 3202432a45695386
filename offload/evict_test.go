package offload

import (
	"fmt"
	"strings"
	"testing"
)

func TestLRU(t *testing.T) {
	// Steps: uN (Unused slot N), sN (Used), v (Victim; the wanted victims
	// are listed in order, "-" for none).
	for _, tc := range []struct{ name, steps, victims string }{
		{"empty", "v", "-"},
		{"oldest first", "u1 u2 u3 v v v v", "1 2 3 -"},
		{"used leaves", "u1 u2 u3 s1 v v", "2 3"},
		{"reused goes last", "u1 u2 s1 u1 v v", "2 1"},
		{"used unknown", "s5 u5 v", "5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLRU()
			var victims []string
			for _, step := range strings.Fields(tc.steps) {
				var n int
				fmt.Sscanf(step[1:], "%d", &n)
				switch step[0] {
				case 'u':
					if !l.Unused(n, Key{0, n}) {
						t.Fatal("LRU declined a slot")
					}
				case 's':
					l.Used(n, Key{0, n})
				case 'v':
					if slot, ok := l.Victim(); ok {
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
