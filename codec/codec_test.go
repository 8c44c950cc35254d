package codec

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

func sample(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		if i%7 == 0 {
			b[i] = byte(r.IntN(256))
		} else {
			b[i] = byte(i / 512)
		}
	}
	return b
}

func encode(t *testing.T, c Compression, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := c.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func decode(c Compression, b []byte) ([]byte, error) {
	r, err := Decode(c, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func TestRoundTrip(t *testing.T) {
	for _, name := range Names() {
		for _, size := range []int{0, 1, 100 << 10, 5 << 20} {
			c, err := ByName(name)
			if err != nil {
				t.Fatal(err)
			}
			data := sample(size)
			got, err := decode(c, encode(t, c, data))
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("%s %d bytes: round trip failed: %v", name, size, err)
			}
			if back, err := ByExt(c.Ext()); err != nil || back.Name() != name {
				t.Errorf("ByExt(%s) = %v, %v", c.Ext(), back, err)
			}
		}
	}
}

// io.Copy from a plain reader takes the writers' ReadFrom path, if any.
func TestRoundTripReadFrom(t *testing.T) {
	for _, c := range []Compression{Zstd{}, LZ4{}, Gzip{}, None{}} {
		for _, size := range []int{0, 5, 2 << 20, 7<<20 + 3} {
			data := sample(size)
			var buf bytes.Buffer
			w, _ := c.NewWriter(&buf)
			if n, err := io.Copy(w, struct{ io.Reader }{bytes.NewReader(data)}); err != nil || n != int64(size) {
				t.Fatalf("%s: copy %d, %v", c.Name(), n, err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			got, err := decode(c, buf.Bytes())
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("%s %d bytes: round trip through ReadFrom failed: %v", c.Name(), size, err)
			}
		}
	}
}

func TestDamageIsCorrupt(t *testing.T) {
	data := sample(1 << 20)
	for _, c := range []Compression{Zstd{}, LZ4{}, Gzip{}} {
		enc := encode(t, c, data)
		flipped := bytes.Clone(enc)
		flipped[len(flipped)/2] ^= 0x40
		cases := map[string][]byte{
			"flipped byte": flipped,
			"truncated":    enc[:len(enc)/2],
			"garbage":      []byte("this is not compressed data at all, not at all"),
		}
		for desc, b := range cases {
			got, err := decode(c, b)
			if err == nil && bytes.Equal(got, data) {
				t.Errorf("%s %s: decoded to the original", c.Name(), desc)
				continue
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s %s: err = %v, want ErrCorrupt", c.Name(), desc, err)
			}
		}
	}
}

var errNet = errors.New("connection reset by peer")

type failingReader struct {
	r io.Reader
	n int
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errNet
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

// A network failure under the decoder must not be reported as corruption:
// callers retry one and not the other.
func TestSourceErrorIsNotCorrupt(t *testing.T) {
	data := sample(2 << 20)
	for _, name := range Names() {
		c, _ := ByName(name)
		enc := encode(t, c, data)
		r, err := Decode(c, &failingReader{r: bytes.NewReader(enc), n: len(enc) / 3})
		if err == nil {
			_, err = io.ReadAll(r)
		}
		if !errors.Is(err, errNet) || errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want the source error and not ErrCorrupt", name, err)
		}
	}
}

func TestUnknown(t *testing.T) {
	if _, err := ByName("brotli"); !errors.Is(err, ErrUnknown) {
		t.Errorf("ByName(brotli) err = %v", err)
	}
	if _, err := ByExt("xz"); !errors.Is(err, ErrUnknown) {
		t.Errorf("ByExt(xz) err = %v", err)
	}
}
