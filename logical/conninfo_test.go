package logical

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestToolConn(t *testing.T) {
	tests := []struct {
		dsn  string
		arg  string
		env  []string
		err  error
		same bool // pgconn must read arg (plus the password) like dsn
	}{
		{dsn: "", arg: ""},
		{dsn: "   ", arg: ""},
		{dsn: "host=db port=5433 dbname=app", arg: "host='db' port='5433' dbname='app'", same: true},
		{dsn: "host=db password=s3cret dbname=app", arg: "host='db' dbname='app'", env: []string{"PGPASSWORD=s3cret"}, same: true},
		{dsn: "host = db  password = 'it''s' user=bob", err: ErrInvalid},
		{dsn: `host=db password='it\'s a \\secret' user=bob`, arg: "host='db' user='bob'", env: []string{`PGPASSWORD=it's a \secret`}, same: true},
		{dsn: `password=a\ b host=db`, arg: "host='db'", env: []string{"PGPASSWORD=a b"}, same: true},
		{dsn: "postgres://bob:pw@db:5433/app?sslmode=disable", arg: "postgres://bob@db:5433/app?sslmode=disable", env: []string{"PGPASSWORD=pw"}, same: true},
		{dsn: "postgresql://db/app?password=pw&application_name=x", arg: "postgresql://db/app?application_name=x", env: []string{"PGPASSWORD=pw"}, same: true},
		{dsn: "host=db dbname", err: ErrInvalid},
		{dsn: "host=db password='unterminated", err: ErrInvalid},
	}
	for _, tt := range tests {
		arg, env, err := toolConn(tt.dsn)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("toolConn(%q): err %v, want %v", tt.dsn, err, tt.err)
			}
			if err != nil && (strings.Contains(err.Error(), "pw") || strings.Contains(err.Error(), "unterminated") && strings.Contains(err.Error(), "'")) {
				t.Errorf("error quotes the connection string: %v", err)
			}
			continue
		}
		if err != nil || arg != tt.arg || !slices.Equal(env, tt.env) {
			t.Errorf("toolConn(%q) = %q, %q, %v; want %q, %q", tt.dsn, arg, env, err, tt.arg, tt.env)
			continue
		}
		if !tt.same {
			continue
		}
		want, err := pgconn.ParseConfig(tt.dsn)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgconn.ParseConfig(arg)
		if err != nil {
			t.Fatalf("pgconn cannot read %q: %v", arg, err)
		}
		if len(env) == 1 {
			got.Password = strings.TrimPrefix(env[0], "PGPASSWORD=")
		}
		if got.Host != want.Host || got.Port != want.Port || got.Database != want.Database || got.User != want.User || got.Password != want.Password {
			t.Errorf("%q: rewritten as %q reads differently: %+v vs %+v", tt.dsn, arg, got, want)
		}
	}
}

func TestWithDatabase(t *testing.T) {
	tests := []struct{ dsn, db, want string }{
		{"host=127.0.0.1 port=5 dbname=postgres sslmode=disable", "app", "host='127.0.0.1' port='5' sslmode='disable' dbname='app'"},
		{"host=/tmp/x port=5", "my db", "host='/tmp/x' port='5' dbname='my db'"},
		{"postgres://u@h:5/postgres?sslmode=disable", "app", "postgres://u@h:5/app?sslmode=disable"},
		{"postgres://u@h:5?dbname=x", "app", "postgres://u@h:5/app"},
	}
	for _, tt := range tests {
		got, err := WithDatabase(tt.dsn, tt.db)
		if err != nil || got != tt.want {
			t.Errorf("WithDatabase(%q, %q) = %q, %v; want %q", tt.dsn, tt.db, got, err, tt.want)
			continue
		}
		cfg, err := pgconn.ParseConfig(got)
		if err != nil || cfg.Database != tt.db {
			t.Errorf("%q: pgconn reads database %q, %v", got, cfg.Database, err)
		}
	}
}

func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{max: 8}
	b.Write([]byte("hello "))
	if b.String() != "hello" {
		t.Fatalf("%q", b.String())
	}
	b.Write([]byte("world!\n"))
	if got := b.String(); got != "...world!" {
		t.Fatalf("%q", got)
	}
}
