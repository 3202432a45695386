package safetensors_test

import (
	"encoding/binary"
	"fmt"
	"log"
	"math"
	"os"
	"path/filepath"

	"github.com/moesys/moesys/safetensors"
	"github.com/moesys/moesys/tensor"
)

func Example() {
	dir, err := os.MkdirTemp("", "safetensors-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "model.safetensors")

	// A (2, 3) F32 weight and a BF16 bias, as raw little-endian bytes.
	w := make([]byte, 0, 24)
	for i := range 6 {
		w = binary.LittleEndian.AppendUint32(w, math.Float32bits(float32(i)/2))
	}
	bias := binary.LittleEndian.AppendUint16(nil, tensor.F32ToBF16(-1.5))
	err = safetensors.WriteFile(path, []safetensors.Tensor{
		{Name: "proj.weight", DType: tensor.F32, Shape: tensor.Shape{2, 3}, Data: w},
		{Name: "proj.bias", DType: tensor.BF16, Shape: tensor.Shape{1}, Data: bias},
	}, map[string]string{"format": "pt"})
	if err != nil {
		log.Fatal(err)
	}

	f, err := safetensors.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	for _, name := range f.Names() {
		info, _ := f.Info(name)
		fmt.Printf("%s %v %v offset %d size %d\n", name, info.DType, info.Shape, info.Offset, info.Size)
	}
	weight, _ := f.F32("proj.weight") // a view of the mapping, valid until f.Close
	b, _ := f.U16("proj.bias")
	fmt.Println(weight, tensor.BF16ToF32(b[0]), f.Metadata())
	// Output:
	// proj.bias BF16 (1) offset 24 size 2
	// proj.weight F32 (2, 3) offset 0 size 24
	// [0 0.5 1 1.5 2 2.5] -1.5 map[format:pt]
}
