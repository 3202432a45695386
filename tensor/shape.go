package tensor

import (
	"fmt"
	"math"
	"strings"
)

// Shape lists a tensor's dimensions, outermost first (row-major).
type Shape []int

// NumElements returns the product of the dimensions (1 for a scalar shape).
// It panics on a negative dimension; use Elements to check untrusted shapes.
func (s Shape) NumElements() int {
	n, err := s.Elements()
	if err != nil {
		panic(err)
	}
	return n
}

// Elements returns the product of the dimensions, or an error if a dimension
// is negative or the product overflows int.
func (s Shape) Elements() (int, error) {
	n := 1
	for _, d := range s {
		if d < 0 {
			return 0, fmt.Errorf("tensor: negative dimension in shape %v", []int(s))
		}
		if d != 0 && n > math.MaxInt/d {
			return 0, fmt.Errorf("tensor: shape %v overflows", []int(s))
		}
		n *= d
	}
	return n, nil
}

// Equal reports whether s and t have the same dimensions.
func (s Shape) Equal(t Shape) bool {
	if len(s) != len(t) {
		return false
	}
	for i := range s {
		if s[i] != t[i] {
			return false
		}
	}
	return true
}

// String formats s as "(4, 8)".
func (s Shape) String() string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}
