package codec

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"filippo.io/age"
)

// AgeExt is the extension encryption adds after the compression's.
const AgeExt = "age"

var (
	// ErrNoKey: an encrypted object, and no identity to decrypt it with.
	ErrNoKey = errors.New("object is encrypted and no age identity is configured (WALGO_AGE_IDENTITY_FILE)")
	// ErrWrongKey: none of the configured identities opens the object.
	ErrWrongKey = errors.New("none of the configured age identities can decrypt the object (wrong WALGO_AGE_IDENTITY_FILE?)")
)

// Codec is how walgo stores a stream: a compression, then age encryption
// when recipients are set. Reading picks both from the object's extension,
// so a repository may mix codecs, and encrypted with plain objects.
type Codec struct {
	Compression Compression
	recipients  []age.Recipient
	identities  []age.Identity
}

// New returns a codec writing with c (zstd if nil), encrypting to
// recipients if any, and decrypting with identities.
func New(c Compression, recipients []age.Recipient, identities []age.Identity) *Codec {
	if c == nil {
		c = Zstd{}
	}
	return &Codec{Compression: c, recipients: recipients, identities: identities}
}

// Encrypts reports whether writes are encrypted.
func (c *Codec) Encrypts() bool { return len(c.recipients) > 0 }

// Ext is the extension written objects get: "zst", or "zst.age".
func (c *Codec) Ext() string {
	if c.Encrypts() {
		return c.Compression.Ext() + "." + AgeExt
	}
	return c.Compression.Ext()
}

// NewWriter compresses, then encrypts, into w. Close flushes both and does
// not close w.
func (c *Codec) NewWriter(w io.Writer) (io.WriteCloser, error) {
	if !c.Encrypts() {
		return c.Compression.NewWriter(w)
	}
	enc, err := age.Encrypt(w, c.recipients...)
	if err != nil {
		return nil, fmt.Errorf("age: %w", err)
	}
	cw, err := c.Compression.NewWriter(enc)
	if err != nil {
		return nil, err
	}
	return &chainWriter{WriteCloser: cw, outer: enc}, nil
}

type chainWriter struct {
	io.WriteCloser
	outer io.WriteCloser
}

func (w *chainWriter) Close() error {
	if err := w.WriteCloser.Close(); err != nil {
		return err
	}
	return w.outer.Close()
}

// AllExts lists every extension walgo gives the objects it writes, the
// plain ones first. Objects other tools wrote may also carry ForeignExts.
func AllExts() []string {
	out := Exts()
	for _, e := range Exts() {
		out = append(out, e+"."+AgeExt)
	}
	return out
}

// Decode opens a plain reader on an object stored with extension ext
// ("zst", "lz4.age", "br", "" for a bare name ...). A nil Codec reads
// unencrypted objects. Only walgo's own formats are ever encrypted. Failures of r itself pass through unchanged;
// damage wraps ErrCorrupt; a key problem is ErrNoKey or ErrWrongKey.
func (c *Codec) Decode(ext string, r io.Reader) (io.ReadCloser, error) {
	compExt, encrypted := strings.CutSuffix(ext, "."+AgeExt)
	comp, err := ByExt(compExt)
	if err != nil {
		return nil, err
	}
	if !encrypted {
		return Decode(comp, r)
	}
	if c == nil || len(c.identities) == 0 {
		return nil, ErrNoKey
	}
	src := markSource{r}
	dr, err := age.Decrypt(src, c.identities...)
	if err != nil {
		var se sourceError
		var nm *age.NoIdentityMatchError
		switch {
		case errors.As(err, &se):
			return nil, se.err
		case errors.As(err, &nm):
			return nil, ErrWrongKey
		}
		return nil, fmt.Errorf("%w: age: %v", ErrCorrupt, err)
	}
	return comp.NewReader(ageErrReader{dr})
}

// ageErrReader marks age's failures inside the payload (a flipped byte,
// truncation) as corruption, and passes source errors through.
type ageErrReader struct{ r io.Reader }

func (a ageErrReader) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if err != nil && err != io.EOF {
		var se sourceError
		if errors.As(err, &se) {
			return n, se
		}
		return n, sourceError{fmt.Errorf("%w: age: %v", ErrCorrupt, err)}
	}
	return n, err
}

// ParseRecipients reads age recipients: public keys ("age1...") separated
// by commas, spaces or newlines.
func ParseRecipients(s string) ([]age.Recipient, error) {
	var out []age.Recipient
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' }) {
		r, err := age.ParseX25519Recipient(f)
		if err != nil {
			return nil, fmt.Errorf("age recipient %q: %w", f, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// ReadIdentities reads an age identity file (lines "AGE-SECRET-KEY-1...",
// comments with #).
func ReadIdentities(path string) ([]age.Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("age identity file: %w", err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(bufio.NewReader(f))
	if err != nil {
		return nil, fmt.Errorf("age identity file %s: %w", path, err)
	}
	return ids, nil
}
