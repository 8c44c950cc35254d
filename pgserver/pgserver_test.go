package pgserver

// Starting a real server is tested end to end through the walgo binary run
// as the postgres OS user (integration/drill_test.go): Start refuses root,
// and `go test` runs as root in CI. These are the parts that need no server.

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakePostgres writes dir/postgres, a script printing a `postgres
// --version` line for version.
func fakePostgres(t *testing.T, dir, version string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\necho 'postgres (PostgreSQL) " + version + " (Debian " + version + "-1)'\n"
	if err := os.WriteFile(filepath.Join(dir, "postgres"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestFindBinDir(t *testing.T) {
	tmp := t.TempDir()
	root := filepath.Join(tmp, "usr-lib-postgresql")
	fakePostgres(t, filepath.Join(root, "15", "bin"), "15.8")
	fakePostgres(t, filepath.Join(root, "14", "bin"), "16.1") // mislabelled folder
	fakePostgres(t, filepath.Join(tmp, "pgconfig", "bin"), "14.2")
	fakePostgres(t, filepath.Join(tmp, "real", "bin"), "9.6.24")
	pathDir := filepath.Join(tmp, "path")
	os.MkdirAll(pathDir, 0o755)
	if err := os.Symlink(filepath.Join(tmp, "real", "bin", "postgres"), filepath.Join(pathDir, "postgres")); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(tmp, "pg_config")
	if err := os.WriteFile(cfg, []byte("#!/bin/sh\necho "+filepath.Join(tmp, "pgconfig", "bin")+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	oldRoot, oldCfg := packagedRoot, pgConfig
	packagedRoot, pgConfig = root, cfg
	t.Cleanup(func() { packagedRoot, pgConfig = oldRoot, oldCfg })
	t.Setenv("PATH", pathDir)

	tests := []struct {
		name     string
		version  string
		explicit string
		want     string // "" with wantErr
		wantErr  error
	}{
		{"packaged folder of the version", "15", "", filepath.Join(root, "15", "bin"), nil},
		{"pg_config when the packaged one is another version", "14", "", filepath.Join(tmp, "pgconfig", "bin"), nil},
		{"postgres in PATH, symlink resolved", "9.6", "", filepath.Join(tmp, "real", "bin"), nil},
		{"explicit folder of the version", "14", filepath.Join(tmp, "pgconfig", "bin"), filepath.Join(tmp, "pgconfig", "bin"), nil},
		{"explicit folder of another version", "15", filepath.Join(tmp, "pgconfig", "bin"), "", ErrNoServer},
		{"explicit folder without postgres", "15", tmp, "", ErrNoServer},
		{"no server of the version anywhere", "12", "", "", ErrNoServer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FindBinDir(tt.version, tt.explicit)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %q, %v; want %v", got, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.version) {
					t.Errorf("error does not name version %s: %v", tt.version, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestVersions(t *testing.T) {
	for _, tt := range []struct{ out, want string }{
		{"postgres (PostgreSQL) 15.8 (Debian 15.8-1.pgdg120+1)\n", "15"},
		{"postgres (PostgreSQL) 9.6.24\n", "9.6"},
		{"postgres (PostgreSQL) 17devel\n", "17"},
		{"postgres (PostgreSQL) 16beta2\n", "16"},
		{"something else\n", ""},
	} {
		if got := versionOf(tt.out); got != tt.want {
			t.Errorf("versionOf(%q) = %q, want %q", tt.out, got, tt.want)
		}
	}
}

func TestDataDirVersion(t *testing.T) {
	for _, tt := range []struct {
		name, content, want string
		ok                  bool
	}{
		{"15", "15\n", "15", true},
		{"9.6", "9.6\n", "9.6", true},
		{"garbage", "hello\n", "", false},
		{"missing", "", "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.name != "missing" {
				os.WriteFile(filepath.Join(dir, "PG_VERSION"), []byte(tt.content), 0o600)
			}
			got, err := DataDirVersion(dir)
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("got %q, %v; want %q (ok %v)", got, err, tt.want, tt.ok)
			}
		})
	}
}

// settingsOf reads the -c settings of a command line, in order.
func settingsOf(t *testing.T, args []string) (map[string]string, []string) {
	t.Helper()
	set, order := map[string]string{}, []string{}
	for i := 0; i < len(args); i++ {
		if args[i] != "-c" {
			continue
		}
		i++
		k, v, ok := strings.Cut(args[i], "=")
		if !ok {
			t.Fatalf("setting without '=': %q", args[i])
		}
		set[k] = v
		order = append(order, k)
	}
	return set, order
}

func TestServerArgs(t *testing.T) {
	tests := []struct {
		name    string
		version string
		extra   []string
		want    map[string]string
		absent  []string
	}{
		{
			name:    "isolated",
			version: "15",
			want: map[string]string{
				"listen_addresses": "127.0.0.1", "port": "54321", "unix_socket_directories": "/tmp/p",
				"hba_file": "/tmp/p/pg_hba.conf", "ident_file": "/tmp/p/pg_ident.conf",
				"archive_mode": "off", "primary_conninfo": "", "primary_slot_name": "",
				"external_pid_file": "/tmp/p/postmaster.pid", "ssl": "off", "logging_collector": "off",
			},
			absent: []string{"stats_temp_directory", "shared_preload_libraries"},
		},
		{
			name:    "extra settings come last",
			version: "16",
			extra:   []string{"shared_buffers=64MB", "archive_mode=off"},
			want:    map[string]string{"shared_buffers": "64MB", "archive_mode": "off"},
		},
		{
			name:    "postgres 11: recovery.conf settings are not server settings",
			version: "11",
			want:    map[string]string{"archive_mode": "off", "stats_temp_directory": "/tmp/p/pg_stat_tmp"},
			absent:  []string{"primary_conninfo", "primary_slot_name"},
		},
		{
			name:    "9.6",
			version: "9.6",
			want:    map[string]string{"archive_mode": "off", "stats_temp_directory": "/tmp/p/pg_stat_tmp"},
			absent:  []string{"primary_conninfo"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := serverArgs("/data", "/tmp/p", 54321, tt.version, tt.extra)
			if !slices.Equal(args[:2], []string{"-D", "/data"}) {
				t.Errorf("args start %q", args[:2])
			}
			set, order := settingsOf(t, args)
			for k, v := range tt.want {
				if got, ok := set[k]; !ok || got != v {
					t.Errorf("%s = %q (set %v), want %q", k, got, ok, v)
				}
			}
			for _, k := range tt.absent {
				if _, ok := set[k]; ok {
					t.Errorf("%s is set: %q", k, set[k])
				}
			}
			if n := len(tt.extra); n > 0 {
				var want []string
				for _, kv := range tt.extra {
					k, _, _ := strings.Cut(kv, "=")
					want = append(want, k)
				}
				if !slices.Equal(order[len(order)-n:], want) {
					t.Errorf("extra settings are not last: %v", order)
				}
			}
		})
	}
}

func TestStartRefusesRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		// Not root: the check must let us through.
		if err := CheckUser(); err != nil {
			t.Fatalf("CheckUser as uid %d: %v", os.Geteuid(), err)
		}
		return
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "PG_VERSION"), []byte("15\n"), 0o600)
	s, err := Start(context.Background(), Options{DataDir: dir})
	if !errors.Is(err, ErrRoot) || s != nil {
		t.Fatalf("Start as root: %v, %v; want ErrRoot", s, err)
	}
	if !strings.Contains(err.Error(), "OS user, e.g. postgres") {
		t.Errorf("the error does not say what to do: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("Start as root touched the data directory: %d entries", len(ents))
	}
}

func TestDSN(t *testing.T) {
	s := &Server{dir: "/tmp/walgo-pgserver-1", port: 5433, user: "postgres"}
	if got, want := s.DSN(), "host=/tmp/walgo-pgserver-1 port=5433 user=postgres dbname=postgres sslmode=disable"; got != want {
		t.Errorf("DSN %q, want %q", got, want)
	}
	s = &Server{dir: "/tmp/a b", port: 5433, user: `o'brien`}
	if got, want := s.DSN(), `host='/tmp/a b' port=5433 user='o\'brien' dbname=postgres sslmode=disable`; got != want {
		t.Errorf("DSN %q, want %q", got, want)
	}
}

func TestTailLines(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	var b strings.Builder
	for i := range 100_000 {
		b.WriteString("line ")
		b.WriteString(strings.Repeat("x", i%7))
		b.WriteString("\n")
	}
	b.WriteString("LAST\n")
	os.WriteFile(p, []byte(b.String()), 0o600)
	got := tailLines(p, 0, 3)
	if lines := strings.Split(got, "\n"); len(lines) != 3 || lines[2] != "LAST" {
		t.Errorf("tail: %q", got)
	}
	if got := tailLines(filepath.Join(t.TempDir(), "none"), 0, 3); got != "" {
		t.Errorf("tail of a missing file: %q", got)
	}
}
