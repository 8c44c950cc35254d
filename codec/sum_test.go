package codec

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestSums(t *testing.T) {
	for _, data := range []string{"", "a", strings.Repeat("walgo", 100_000)} {
		h := sha256.Sum256([]byte(data))
		want := hex.EncodeToString(h[:])

		var dst bytes.Buffer
		var seen []int64
		w := NewSumWriter(&dst)
		w.Progress = func(n int64) { seen = append(seen, n) }
		if _, err := io.Copy(w, strings.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		if dst.String() != data || w.N != int64(len(data)) || w.SHA256() != want {
			t.Errorf("writer of %d bytes: passed %d, counted %d, sum %s", len(data), dst.Len(), w.N, w.SHA256())
		}
		if len(data) > 0 && (len(seen) == 0 || seen[len(seen)-1] != int64(len(data))) {
			t.Errorf("progress %v, want it to end at %d", seen, len(data))
		}

		count := &SumWriter{W: io.Discard}
		io.Copy(count, strings.NewReader(data))
		if count.N != int64(len(data)) {
			t.Errorf("count-only writer counted %d, want %d", count.N, len(data))
		}

		r := NewSumReader(strings.NewReader(data))
		got, err := io.ReadAll(r)
		if err != nil || string(got) != data || r.N != int64(len(data)) || r.SHA256() != want {
			t.Errorf("reader of %d bytes: read %d, counted %d, sum %s, %v", len(data), len(got), r.N, r.SHA256(), err)
		}
	}
}

// TestAsyncSHA256 writes inputs around and across chunk boundaries in
// random pieces from a buffer the test overwrites after every Write (the
// hasher must have copied it) and compares with sha256.Sum256.
func TestAsyncSHA256(t *testing.T) {
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	sizes := []int{0, 1, asyncChunk - 1, asyncChunk, asyncChunk + 1, 3*asyncChunk + 7}
	for range 6 {
		sizes = append(sizes, rng.IntN(5*asyncChunk))
	}
	for _, size := range sizes {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		want := sha256.Sum256(data)
		a := NewAsyncSHA256()
		scratch := make([]byte, asyncChunk+100)
		for rest := data; len(rest) > 0; {
			k := min(len(rest), 1+rng.IntN(len(scratch)))
			copy(scratch, rest[:k])
			if n, err := a.Write(scratch[:k]); n != k || err != nil {
				t.Fatalf("seed %d, size %d: Write = %d, %v", seed, size, n, err)
			}
			clear(scratch) // the caller reuses its buffer at once
			rest = rest[k:]
		}
		if got := a.Sum(); got != hex.EncodeToString(want[:]) {
			t.Errorf("seed %d, size %d: sum %s, want %x", seed, size, got, want)
		}
		if again := a.Sum(); again != hex.EncodeToString(want[:]) || a.Close() != nil {
			t.Errorf("size %d: Sum is not stable after the end", size)
		}
		if _, err := a.Write([]byte("x")); err == nil {
			t.Errorf("size %d: Write after Sum accepted", size)
		}
	}
}
