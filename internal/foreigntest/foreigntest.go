// Package foreigntest makes objects the way other tools store them in a
// shared repository, for tests of what walgo reads but never writes:
//
//   - "br": `brotli -q 3 -c`, the Debian brotli tool, built on the C library
//     WAL-G's cbrotli compressor wraps at the quality WAL-G sets (3);
//   - "lzma": github.com/ulikunitz/xz/lzma's Writer with its defaults, the
//     very encoder WAL-G's lzma compression calls;
//   - "lzo": `lzop --stdout` reading stdin, WAL-E's own command;
//   - "": the plain bytes, as WAL-G's compression "none" stores them.
//
// A missing tool skips the test, or fails it when CI=true or
// WALGO_TEST_NO_SKIP=1 (scripts/test.sh installs lzop and brotli).
package foreigntest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/ulikunitz/xz/lzma"
)

// Exts are the foreign extensions Encode makes, the bare name last.
var Exts = []string{"br", "lzma", "lzo", ""}

// Encode returns data stored as the tool that writes ext would store it.
func Encode(t testing.TB, ext string, data []byte) []byte {
	t.Helper()
	switch ext {
	case "br":
		return Tool(t, data, "brotli", "-q", "3", "-c")
	case "lzma":
		return LZMA(t, data)
	case "lzo":
		return Tool(t, data, "lzop", "--stdout")
	case "":
		return bytes.Clone(data)
	}
	t.Fatalf("foreigntest: no encoder for extension %q", ext)
	return nil
}

// LZMA encodes data as WAL-G's lzma compressor does.
func LZMA(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := lzma.NewWriter(&buf)
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

// Tool runs a compressor with data on stdin and returns its stdout.
func Tool(t testing.TB, data []byte, name string, args ...string) []byte {
	t.Helper()
	Require(t, name)
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(data)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, errb.String())
	}
	return out.Bytes()
}

// Require skips (or in CI fails) the test when tool is not installed.
func Require(t testing.TB, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		msg := fmt.Sprintf("%s is not installed (apt-get install -y %s)", tool, pkg(tool))
		if os.Getenv("CI") == "true" || os.Getenv("WALGO_TEST_NO_SKIP") == "1" {
			t.Fatal(msg + "; not skipping because CI=true or WALGO_TEST_NO_SKIP=1")
		}
		t.Skip(msg)
	}
}

func pkg(tool string) string {
	if tool == "xz" {
		return "xz-utils"
	}
	return tool
}
