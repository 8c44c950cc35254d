package pgtest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// DefaultMajor is the major version of the default installation's server
// (BinDir). It calls Require first.
func DefaultMajor(t testing.TB) int {
	t.Helper()
	dir := BinDir(t)
	m, err := serverMajor(dir)
	if err != nil {
		unavailable(t, err)
	}
	return m
}

// ServerBinDir returns a folder holding initdb, pg_ctl and postgres of the
// given major version: the default installation when it is that major,
// /usr/lib/postgresql/<major>/bin, or the relocatable build of that major
// pinned in scripts/versions (PG<major>_NPM_VERSION), installed by
// scripts/install-pg.sh under $WALGO_TEST_PG_CACHE (default
// /var/cache/walgo-test/pg). It fails or skips (see Require) when none is
// there.
func ServerBinDir(t testing.TB, major int) string {
	t.Helper()
	Require(t)
	dir, err := serverBinDir(major)
	if err != nil {
		unavailable(t, err)
	}
	return dir
}

// MatrixMajors is the list of major versions the version matrix runs:
// $WALGO_TEST_PG_MAJORS (space or comma separated, e.g. "13,17") when set,
// else PG_MATRIX_MAJORS of scripts/versions.
func MatrixMajors(t testing.TB) []int {
	t.Helper()
	s := os.Getenv("WALGO_TEST_PG_MAJORS")
	if s == "" {
		v, err := pinnedVersions()
		if err != nil {
			t.Fatalf("pgtest: %v", err)
		}
		s = v["PG_MATRIX_MAJORS"]
	}
	out := parseMajors(t, s)
	if len(out) == 0 {
		t.Fatal("pgtest: no major versions in WALGO_TEST_PG_MAJORS or scripts/versions' PG_MATRIX_MAJORS")
	}
	return out
}

// RefusedMajors is scripts/versions' PG_REFUSED_MAJORS: majors walgo does
// not support, whose real servers the tests start to see them refused.
func RefusedMajors(t testing.TB) []int {
	t.Helper()
	v, err := pinnedVersions()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	out := parseMajors(t, v["PG_REFUSED_MAJORS"])
	if len(out) == 0 {
		t.Fatal("pgtest: no major versions in scripts/versions' PG_REFUSED_MAJORS")
	}
	return out
}

func parseMajors(t testing.TB, s string) []int {
	t.Helper()
	var out []int
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		m, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("pgtest: major version %q: %v", f, err)
		}
		out = append(out, m)
	}
	return out
}

var serverDirs sync.Map // major -> string

func serverBinDir(major int) (string, error) {
	if v, ok := serverDirs.Load(major); ok {
		return v.(string), nil
	}
	dir, err := findServerBinDir(major)
	if err != nil {
		return "", err
	}
	serverDirs.Store(major, dir)
	return dir, nil
}

func findServerBinDir(major int) (string, error) {
	hasServer := func(dir string) bool {
		for _, b := range []string{"initdb", "pg_ctl", "postgres"} {
			if !isExecutable(filepath.Join(dir, b)) {
				return false
			}
		}
		m, err := serverMajor(dir)
		return err == nil && m == major
	}
	if dir, err := binDir(); err == nil && hasServer(dir) {
		return dir, nil
	}
	if dir := fmt.Sprintf("/usr/lib/postgresql/%d/bin", major); hasServer(dir) {
		return dir, nil
	}
	v, err := pinnedVersions()
	if err != nil {
		return "", err
	}
	key := fmt.Sprintf("PG%d_NPM_VERSION", major)
	version := v[key]
	if version == "" {
		return "", fmt.Errorf("no PostgreSQL %d server: none installed, and scripts/versions pins no %s", major, key)
	}
	cache := os.Getenv("WALGO_TEST_PG_CACHE")
	if cache == "" {
		cache = "/var/cache/walgo-test/pg"
	}
	dir := filepath.Join(cache, version, "node_modules", v["PG_NPM_PACKAGE"], "native", "bin")
	if !hasServer(dir) {
		return "", fmt.Errorf("no PostgreSQL %d server in %s (install it with: bash scripts/install-pg.sh %d)", major, dir, major)
	}
	return dir, nil
}

var majors sync.Map // bin folder -> int

// serverMajor runs dir/postgres --version.
func serverMajor(dir string) (int, error) {
	if v, ok := majors.Load(dir); ok {
		return v.(int), nil
	}
	out, err := exec.Command(filepath.Join(dir, "postgres"), "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("%s/postgres --version: %w", dir, err)
	}
	// "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
	f := strings.Fields(string(out))
	for i, w := range f {
		if w == "(PostgreSQL)" && i+1 < len(f) {
			major, _, _ := strings.Cut(f[i+1], ".")
			m, err := strconv.Atoi(strings.TrimRightFunc(major, func(r rune) bool { return r < '0' || r > '9' }))
			if err == nil {
				majors.Store(dir, m)
				return m, nil
			}
		}
	}
	return 0, fmt.Errorf("%s/postgres --version: cannot read %q", dir, strings.TrimSpace(string(out)))
}

// pinnedVersions reads scripts/versions (NAME=value lines) of the
// repository the tests run in, found from the working directory up.
var pinnedVersions = sync.OnceValues(func() (map[string]string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	for {
		p := filepath.Join(dir, "scripts", "versions")
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			f, err := os.Open(p)
			if err != nil {
				return nil, fmt.Errorf("pinned test versions: %w", err)
			}
			defer f.Close()
			v := map[string]string{}
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				line := strings.TrimSpace(sc.Text())
				if line == "" || strings.HasPrefix(line, "#") {
					continue
				}
				if k, val, ok := strings.Cut(line, "="); ok {
					v[k] = strings.Trim(val, `"'`)
				}
			}
			return v, sc.Err()
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return nil, errors.New("pinned test versions: no go.mod above the working directory")
		}
		dir = parent
	}
})
