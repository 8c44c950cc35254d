package codec

import (
	"errors"
	"fmt"
)

// LZO1X block decoding, written from the format's description in the Linux
// kernel's Documentation/staging/lzo.rst (version 0, the one liblzo and
// lzop produce; the kernel-only run-length extension is not accepted). The
// LZO1X-1, LZO1X-1(15) and LZO1X-999 compressors all write this one format.
//
// A block is a series of instructions. Each copies a run of literal bytes
// from the input, or a match: bytes already written, at a distance behind
// the output position. The two low bits of a match instruction (or of its
// distance operand) say how many literals (0-3) follow it, and that count
// (the state) changes what the next instruction byte below 16 means.

var errLZOEnd = errors.New("lzo: no end-of-stream marker")

// lzo1xDecode decodes one LZO1X block from in into out, which must be
// exactly the block's decompressed length. Anything that does not decode to
// exactly len(out) bytes, with the end marker last, is an error.
func lzo1xDecode(in, out []byte) error {
	d := lzoDecoder{in: in, out: out}
	return d.run()
}

type lzoDecoder struct {
	in, out []byte
	ip, op  int
}

func (d *lzoDecoder) byte() (int, error) {
	if d.ip >= len(d.in) {
		return 0, fmt.Errorf("lzo: input ends inside an instruction (at byte %d)", d.ip)
	}
	b := d.in[d.ip]
	d.ip++
	return int(b), nil
}

func (d *lzoDecoder) le16() (int, error) {
	if d.ip+2 > len(d.in) {
		return 0, fmt.Errorf("lzo: input ends inside an instruction (at byte %d)", d.ip)
	}
	v := int(d.in[d.ip]) | int(d.in[d.ip+1])<<8
	d.ip += 2
	return v, nil
}

// length reads a length whose low bits (masked to base, 0 meaning "longer")
// are small: each following zero byte adds 255, then the first non-zero
// byte adds itself plus base.
func (d *lzoDecoder) length(bits, base int) (int, error) {
	if bits != 0 {
		return bits, nil
	}
	n := base
	for {
		b, err := d.byte()
		if err != nil {
			return 0, err
		}
		if b != 0 {
			return n + b, nil
		}
		n += 255
		if n > len(d.out) {
			return 0, fmt.Errorf("lzo: length longer than the block (at byte %d)", d.ip)
		}
	}
}

func (d *lzoDecoder) literals(n int) error {
	if n > len(d.in)-d.ip {
		return fmt.Errorf("lzo: %d literal bytes, but only %d input bytes left", n, len(d.in)-d.ip)
	}
	if n > len(d.out)-d.op {
		return fmt.Errorf("lzo: output longer than the block's %d bytes", len(d.out))
	}
	copy(d.out[d.op:], d.in[d.ip:d.ip+n])
	d.ip += n
	d.op += n
	return nil
}

func (d *lzoDecoder) match(dist, n int) error {
	if dist > d.op {
		return fmt.Errorf("lzo: match %d bytes back at output byte %d", dist, d.op)
	}
	if n > len(d.out)-d.op {
		return fmt.Errorf("lzo: output longer than the block's %d bytes", len(d.out))
	}
	src := d.op - dist
	if dist >= n {
		copy(d.out[d.op:d.op+n], d.out[src:src+n])
		d.op += n
		return nil
	}
	for i := range n { // overlapping: repeats the last dist bytes
		d.out[d.op+i] = d.out[src+i]
	}
	d.op += n
	return nil
}

func (d *lzoDecoder) run() error {
	// state: literals the previous instruction copied (0, 1-3, or 4 for a
	// run of 4 or more).
	state := 0
	if len(d.in) > 0 && d.in[0] > 17 {
		// The first byte may be a literal run of its own: byte-17 literals.
		d.ip++
		n := int(d.in[0]) - 17
		if err := d.literals(n); err != nil {
			return err
		}
		state = min(n, 4)
	}
	for {
		t, err := d.byte()
		if err != nil {
			if d.op == len(d.out) {
				return errLZOEnd
			}
			return err
		}
		var dist, n, next int
		switch {
		case t >= 64: // 3 to 8 bytes within 2 KiB
			h, err := d.byte()
			if err != nil {
				return err
			}
			dist, n, next = 1+(t>>2)&7+h<<3, t>>5+1, t&3
		case t >= 32: // within 16 KiB
			if n, err = d.length(t&31, 31); err != nil {
				return err
			}
			v, err := d.le16()
			if err != nil {
				return err
			}
			dist, n, next = 1+v>>2, n+2, v&3
		case t >= 16: // 16 to 48 KiB back, or the end marker
			if n, err = d.length(t&7, 7); err != nil {
				return err
			}
			v, err := d.le16()
			if err != nil {
				return err
			}
			dist, n, next = (t&8)<<11+v>>2, n+2, v&3
			if dist == 0 {
				switch {
				case d.op != len(d.out):
					return fmt.Errorf("lzo: block ends after %d of %d bytes", d.op, len(d.out))
				case d.ip != len(d.in):
					return fmt.Errorf("lzo: %d bytes after the end marker", len(d.in)-d.ip)
				}
				return nil
			}
			dist += 0x4000
		case state == 0: // a literal run of 4 or more
			if n, err = d.length(t, 15); err != nil {
				return err
			}
			if err := d.literals(n + 3); err != nil {
				return err
			}
			state = 4
			continue
		default: // a short match; its reach depends on the literals before it
			h, err := d.byte()
			if err != nil {
				return err
			}
			if state == 4 {
				dist, n = 1+0x800+t>>2+h<<2, 3
			} else {
				dist, n = 1+t>>2+h<<2, 2
			}
			next = t & 3
		}
		if err := d.match(dist, n); err != nil {
			return err
		}
		if err := d.literals(next); err != nil {
			return err
		}
		state = next
	}
}
