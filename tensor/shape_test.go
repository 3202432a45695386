package tensor_test

import (
	"math"
	"testing"

	"github.com/moesys/moesys/tensor"
)

func TestShapeElements(t *testing.T) {
	for _, c := range []struct {
		name    string
		shape   tensor.Shape
		want    int
		wantErr bool
	}{
		{"scalar", tensor.Shape{}, 1, false},
		{"nil scalar", nil, 1, false},
		{"vector", tensor.Shape{7}, 7, false},
		{"matrix", tensor.Shape{4, 8}, 32, false},
		{"3d", tensor.Shape{8, 128, 64}, 65536, false},
		{"zero dim", tensor.Shape{3, 0, 5}, 0, false},
		{"zero dim hides overflow", tensor.Shape{0, math.MaxInt, math.MaxInt}, 0, false},
		{"max", tensor.Shape{math.MaxInt}, math.MaxInt, false},
		{"exact fit", tensor.Shape{1 << 31, 1<<31 - 1}, (1 << 31) * (1<<31 - 1), false},
		{"negative", tensor.Shape{2, -1}, 0, true},
		{"overflow", tensor.Shape{1 << 32, 1 << 32}, 0, true},
		{"overflow in three", tensor.Shape{1 << 21, 1 << 21, 1 << 21}, 0, true},
		{"overflow by one", tensor.Shape{math.MaxInt/2 + 1, 2}, 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.shape.Elements()
			if (err != nil) != c.wantErr {
				t.Fatalf("Elements(%v) error = %v, want error %v", []int(c.shape), err, c.wantErr)
			}
			if got != c.want {
				t.Fatalf("Elements(%v) = %d, want %d", []int(c.shape), got, c.want)
			}
			if !c.wantErr && c.shape.NumElements() != c.want {
				t.Fatalf("NumElements(%v) = %d, want %d", []int(c.shape), c.shape.NumElements(), c.want)
			}
		})
	}
}

func TestShapeNumElementsPanicsOnNegative(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("NumElements of a negative shape did not panic")
		}
	}()
	tensor.Shape{-1}.NumElements()
}

func TestShapeEqualString(t *testing.T) {
	a := tensor.Shape{4, 8}
	for _, c := range []struct {
		b    tensor.Shape
		want bool
	}{
		{tensor.Shape{4, 8}, true},
		{tensor.Shape{8, 4}, false},
		{tensor.Shape{4}, false},
		{tensor.Shape{4, 8, 1}, false},
		{nil, false},
	} {
		if got := a.Equal(c.b); got != c.want {
			t.Errorf("%v.Equal(%v) = %v, want %v", a, c.b, got, c.want)
		}
	}
	if !(tensor.Shape{}).Equal(nil) {
		t.Error("empty shape should equal nil shape")
	}
	if got := a.String(); got != "(4, 8)" {
		t.Errorf("String = %q", got)
	}
	if got := (tensor.Shape{}).String(); got != "()" {
		t.Errorf("scalar String = %q", got)
	}
}
