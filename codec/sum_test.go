package codec

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"strings"
	"testing"
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
