package tensor_test

import (
	"testing"

	"github.com/moesys/moesys/tensor"
)

func TestDTypeNamesSizes(t *testing.T) {
	for _, c := range []struct {
		d     tensor.DType
		name  string
		size  int
		float bool
	}{
		{tensor.F64, "F64", 8, true},
		{tensor.F32, "F32", 4, true},
		{tensor.F16, "F16", 2, true},
		{tensor.BF16, "BF16", 2, true},
		{tensor.I64, "I64", 8, false},
		{tensor.I32, "I32", 4, false},
		{tensor.I16, "I16", 2, false},
		{tensor.I8, "I8", 1, false},
		{tensor.U64, "U64", 8, false},
		{tensor.U32, "U32", 4, false},
		{tensor.U16, "U16", 2, false},
		{tensor.U8, "U8", 1, false},
		{tensor.Bool, "BOOL", 1, false},
		{tensor.F8E4M3, "F8_E4M3", 1, true},
		{tensor.F8E5M2, "F8_E5M2", 1, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.d.String(); got != c.name {
				t.Errorf("String = %q, want %q", got, c.name)
			}
			if got := c.d.Size(); got != c.size {
				t.Errorf("Size = %d, want %d", got, c.size)
			}
			if got := c.d.IsFloat(); got != c.float {
				t.Errorf("IsFloat = %v, want %v", got, c.float)
			}
			got, err := tensor.ParseDType(c.name)
			if err != nil || got != c.d {
				t.Errorf("ParseDType(%q) = %v, %v; want %v", c.name, got, err, c.d)
			}
		})
	}
}

func TestParseDTypeRejects(t *testing.T) {
	for _, name := range []string{"", "INVALID", "f32", "FLOAT32", "F8_E4M3FN", "BOOL ", "bf16"} {
		if d, err := tensor.ParseDType(name); err == nil {
			t.Errorf("ParseDType(%q) = %v, want error", name, d)
		}
	}
}

func TestDTypeInvalid(t *testing.T) {
	var zero tensor.DType
	if zero != tensor.Invalid || zero.Size() != 0 || zero.IsFloat() {
		t.Errorf("zero DType = %v size %d", zero, zero.Size())
	}
	bad := tensor.DType(200)
	if bad.Size() != 0 || bad.String() != "DType(200)" {
		t.Errorf("DType(200): size %d string %q", bad.Size(), bad.String())
	}
}
