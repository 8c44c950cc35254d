package codec

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"filippo.io/age"
)

func newKey(t *testing.T) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestEncryption(t *testing.T) {
	key, other := newKey(t), newKey(t)
	writer := New(Zstd{}, []age.Recipient{key.Recipient()}, nil)
	if writer.Ext() != "zst.age" {
		t.Fatalf("Ext = %s", writer.Ext())
	}
	data := sample(3 << 20)
	var buf bytes.Buffer
	w, err := writer.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := decode(Zstd{}, buf.Bytes()); err == nil {
		t.Fatal("encrypted object reads as plain zstd")
	}
	read := func(c *Codec, b []byte) ([]byte, error) {
		r, err := c.Decode("zst.age", bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		defer r.Close()
		return io.ReadAll(r)
	}
	if got, err := read(New(nil, nil, []age.Identity{other, key}), buf.Bytes()); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("decrypt with the right key among others: %v", err)
	}
	flipped := bytes.Clone(buf.Bytes())
	flipped[len(flipped)/2] ^= 1
	tests := []struct {
		desc  string
		codec *Codec
		b     []byte
		want  error
	}{
		{"no identity", New(nil, nil, nil), buf.Bytes(), ErrNoKey},
		{"nil codec", nil, buf.Bytes(), ErrNoKey},
		{"wrong identity", New(nil, nil, []age.Identity{other}), buf.Bytes(), ErrWrongKey},
		{"flipped byte", New(nil, nil, []age.Identity{key}), flipped, ErrCorrupt},
		{"truncated", New(nil, nil, []age.Identity{key}), buf.Bytes()[:buf.Len()/2], ErrCorrupt},
	}
	for _, tt := range tests {
		if _, err := read(tt.codec, tt.b); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.desc, err, tt.want)
		}
	}
	// A plain object still reads with a codec that holds keys: a repository
	// may hold both.
	var plain bytes.Buffer
	pw, _ := New(LZ4{}, nil, nil).NewWriter(&plain)
	pw.Write(data)
	pw.Close()
	r, err := New(nil, nil, []age.Identity{key}).Decode("lz4", bytes.NewReader(plain.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(r); !bytes.Equal(got, data) {
		t.Fatal("plain object through a keyed codec")
	}
}

func TestEncryptedSourceErrorIsNotCorrupt(t *testing.T) {
	key := newKey(t)
	var buf bytes.Buffer
	w, _ := New(Zstd{}, []age.Recipient{key.Recipient()}, nil).NewWriter(&buf)
	w.Write(sample(2 << 20))
	w.Close()
	r, err := New(nil, nil, []age.Identity{key}).Decode("zst.age", &failingReader{r: bytes.NewReader(buf.Bytes()), n: buf.Len() / 2})
	if err == nil {
		_, err = io.ReadAll(r)
	}
	if !errors.Is(err, errNet) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want the network error and not ErrCorrupt", err)
	}
}

func TestParseRecipients(t *testing.T) {
	a, b := newKey(t), newKey(t)
	got, err := ParseRecipients(a.Recipient().String() + ", " + b.Recipient().String() + "\n")
	if err != nil || len(got) != 2 {
		t.Fatalf("ParseRecipients: %d, %v", len(got), err)
	}
	if _, err := ParseRecipients("age1notakey"); err == nil {
		t.Fatal("a bad recipient was accepted")
	}
	if got, err := ParseRecipients(""); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v, %v", got, err)
	}
}
