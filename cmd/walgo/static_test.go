package main

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// dockerInstructions reads a Dockerfile into its instructions (keyword
// upper-cased, then the rest), joining continued lines and dropping
// comments.
func dockerInstructions(t *testing.T, path string) [][2]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]string
	var cur strings.Builder
	for line := range strings.Lines(string(b)) {
		line = strings.TrimRight(line, "\r\n")
		if trimmed := strings.TrimSpace(line); cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if s, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(s)
			continue
		}
		cur.WriteString(line)
		kw, rest, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, [2]string{strings.ToUpper(kw), strings.TrimSpace(rest)})
		cur.Reset()
	}
	return out
}

// TestDockerBuildIsStatic runs the Dockerfile's own go build command (no
// Docker daemon needed) and checks that the binary is statically linked,
// carries the version given as the build argument, and is the file the
// final stage copies and runs as a non-root user.
func TestDockerBuildIsStatic(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ins := dockerInstructions(t, filepath.Join(root, "Dockerfile"))

	var build, copyFrom, user, entry string
	var froms int
	for _, in := range ins {
		switch kw, rest := in[0], in[1]; {
		case kw == "RUN" && strings.Contains(rest, "go build"):
			if build != "" {
				t.Fatalf("two go build commands in the Dockerfile:\n%s\n%s", build, rest)
			}
			build = rest
		case kw == "FROM":
			froms++
			user = "" // per stage
		case kw == "COPY" && strings.HasPrefix(rest, "--from="):
			copyFrom = rest
		case kw == "USER":
			user = rest
		case kw == "ENTRYPOINT":
			entry = rest
		}
	}
	if build == "" {
		t.Fatal("no RUN ... go build in the Dockerfile")
	}
	if froms < 2 {
		t.Errorf("want a multi-stage build, got %d FROM", froms)
	}
	if !strings.Contains(build, "CGO_ENABLED=0") {
		t.Errorf("the build does not disable cgo: %s", build)
	}
	if user == "" || user == "root" || user == "0" {
		t.Errorf("the final stage runs as %q; want a non-root user", user)
	}
	if entry != `["walgo"]` {
		t.Errorf("ENTRYPOINT %s; want [\"walgo\"]", entry)
	}

	// The output path is the one the final stage copies: build into a temp
	// folder instead.
	m := regexp.MustCompile(`\s-o\s+(\S+)\s`).FindAllStringSubmatch(build, -1)
	if len(m) != 1 {
		t.Fatalf("want exactly one -o in %q", build)
	}
	outPath := m[0][1]
	if fields := strings.Fields(copyFrom); len(fields) < 3 || fields[1] != outPath {
		t.Errorf("the final stage copies %q, the build writes %s", copyFrom, outPath)
	}
	bin := filepath.Join(t.TempDir(), "walgo")
	cmdline := strings.Replace(build, " -o "+outPath+" ", " -o "+bin+" ", 1)
	if cmdline == build {
		t.Fatalf("could not redirect the output of %q", build)
	}

	const version = "v9.9.9-statictest"
	cmd := exec.Command("sh", "-c", cmdline)
	cmd.Dir = root
	// Docker passes ARG values to RUN as environment variables.
	cmd.Env = append(os.Environ(), "VERSION="+version)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmdline, err, out)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has a PT_INTERP header: it needs a dynamic loader")
		}
		if p.Type == elf.PT_DYNAMIC {
			t.Error("the binary has a PT_DYNAMIC header: it is dynamically linked")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) != 0 {
		t.Errorf("DT_NEEDED libraries %v (%v); want none", libs, err)
	}

	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("walgo --version: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "walgo "+version {
		t.Errorf("walgo --version printed %q; want %q", got, "walgo "+version)
	}
}
