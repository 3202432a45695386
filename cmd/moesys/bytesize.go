package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// byteUnits maps a size suffix (lower case) to its multiplier. Single
// letters and IEC names are binary (2G = 2GiB, as dd and JVM -Xmx read
// them: memory is sized in powers of two); the SI names KB, MB, GB, TB are
// decimal.
var byteUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1 << 10, "ki": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mi": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gi": 1 << 30, "gib": 1 << 30, "gb": 1e9,
	"t": 1 << 40, "ti": 1 << 40, "tib": 1 << 40, "tb": 1e12,
}

// parseBytes reads a human size: plain bytes ("1048576"), or a number,
// possibly fractional, with a unit ("512MiB", "2GiB", "1.5G", "4 KiB",
// "3GB"; case-insensitive, see byteUnits). A fractional result is rounded
// down to whole bytes; plain bytes must be a whole number. Negative, NaN,
// infinite and out-of-range sizes are errors.
func parseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	if num == "" {
		return 0, fmt.Errorf("size %q: want a number of bytes with an optional unit, like 512MiB, 2GiB, 1.5G or 1048576", s)
	}
	mul, ok := byteUnits[unit]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (want B, K/KiB, M/MiB, G/GiB, T/TiB, or KB, MB, GB, TB for powers of 1000)", s, strings.TrimSpace(t[i:]))
	}
	if mul == 1 {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("size %q: plain bytes must be a whole number below 2^63", s)
		}
		return n, nil
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: bad number %q", s, num)
	}
	b := math.Floor(v * mul)
	if b >= math.MaxInt64 { // 2^63 exactly: every float below it fits
		return 0, fmt.Errorf("size %q: more than 2^63 bytes", s)
	}
	return int64(b), nil
}

// byteSize is a flag.Value for sizes in bytes that takes human units
// (parseBytes).
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Set(s string) error {
	n, err := parseBytes(s)
	if err != nil {
		return err
	}
	*b = byteSize(n)
	return nil
}
