package logical

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// conninfo is a libpq connection string, as a URL or as keyword=value
// pairs, kept apart so pg_dump and pg_restore can get it without the
// password: a command line is visible to every user of the machine (ps),
// so the password travels in PGPASSWORD instead.
type conninfo struct {
	u  *url.URL    // URL form
	kv [][2]string // keyword/value form, in order
}

// parseConninfo reads a libpq connection string. Errors never quote it:
// it may hold a password.
func parseConninfo(s string) (*conninfo, error) {
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("%w: connection URL does not parse", ErrInvalid)
		}
		return &conninfo{u: u}, nil
	}
	ci := &conninfo{}
	const space = " \t\n\r\v\f"
	rest := strings.TrimLeft(s, space)
	for rest != "" {
		eq := strings.IndexByte(rest, '=')
		if eq < 0 {
			return nil, fmt.Errorf("%w: connection string: want keyword=value pairs or a postgres:// URL", ErrInvalid)
		}
		key := strings.TrimRight(rest[:eq], space)
		if key == "" || strings.ContainsAny(key, space) {
			return nil, fmt.Errorf("%w: connection string: malformed keyword", ErrInvalid)
		}
		rest = strings.TrimLeft(rest[eq+1:], space)
		var val strings.Builder
		if strings.HasPrefix(rest, "'") {
			i := 1
			for ; i < len(rest) && rest[i] != '\''; i++ {
				if rest[i] == '\\' && i+1 < len(rest) {
					i++
				}
				val.WriteByte(rest[i])
			}
			if i >= len(rest) {
				return nil, fmt.Errorf("%w: connection string: unterminated quoted value", ErrInvalid)
			}
			rest = rest[i+1:]
		} else {
			i := 0
			for ; i < len(rest) && !strings.ContainsRune(space, rune(rest[i])); i++ {
				if rest[i] == '\\' && i+1 < len(rest) {
					i++
				}
				val.WriteByte(rest[i])
			}
			rest = rest[i:]
		}
		rest = strings.TrimLeft(rest, space)
		ci.kv = append(ci.kv, [2]string{key, val.String()})
	}
	return ci, nil
}

// get returns a keyword's value ("dbname", "password").
func (c *conninfo) get(key string) string {
	if c.u != nil {
		switch key {
		case "dbname":
			if v := c.u.Query().Get("dbname"); v != "" {
				return v
			}
			return strings.TrimPrefix(c.u.Path, "/")
		case "password":
			if p, ok := c.u.User.Password(); ok {
				return p
			}
		}
		return c.u.Query().Get(key)
	}
	v := ""
	for _, p := range c.kv {
		if p[0] == key {
			v = p[1] // libpq: the last one wins
		}
	}
	return v
}

// set replaces a keyword's value, or removes it when v is empty.
func (c *conninfo) set(key, v string) {
	if c.u != nil {
		q := c.u.Query()
		q.Del(key)
		switch key {
		case "dbname":
			c.u.Path = ""
			if v != "" {
				c.u.Path = "/" + v
			}
		case "password":
			if c.u.User != nil {
				c.u.User = url.User(c.u.User.Username())
			}
			if v != "" {
				q.Set(key, v)
			}
		default:
			if v != "" {
				q.Set(key, v)
			}
		}
		c.u.RawQuery = q.Encode()
		return
	}
	kv := c.kv[:0:0]
	for _, p := range c.kv {
		if p[0] != key {
			kv = append(kv, p)
		}
	}
	if v != "" {
		kv = append(kv, [2]string{key, v})
	}
	c.kv = kv
}

func (c *conninfo) String() string {
	if c.u != nil {
		return c.u.String()
	}
	parts := make([]string, len(c.kv))
	for i, p := range c.kv {
		parts[i] = p[0] + "='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(p[1]) + "'"
	}
	return strings.Join(parts, " ")
}

// toolConn turns a DSN into what a client program gets: the --dbname
// argument without the password (empty when the DSN is empty, so the
// program reads the PG* environment as walgo does) and the environment
// entries that carry the password.
func toolConn(dsn string) (arg string, env []string, err error) {
	if strings.TrimSpace(dsn) == "" {
		return "", nil, nil
	}
	ci, err := parseConninfo(dsn)
	if err != nil {
		return "", nil, err
	}
	if p := ci.get("password"); p != "" {
		env = append(env, "PGPASSWORD="+p)
		ci.set("password", "")
	}
	return ci.String(), env, nil
}

// WithDatabase returns dsn with its database name replaced by db.
func WithDatabase(dsn, db string) (string, error) {
	ci, err := parseConninfo(dsn)
	if err != nil {
		return "", err
	}
	ci.set("dbname", db)
	return ci.String(), nil
}

// DatabaseOf is the database a DSN connects to, taking the PG*
// environment into account as pgx and libpq do; "postgres" when neither
// names one.
func DatabaseOf(dsn string) (string, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "", fmt.Errorf("%w: connection string does not parse", ErrInvalid) // never quote it: it may hold a password
	}
	if cfg.Database == "" {
		return "postgres", nil
	}
	return cfg.Database, nil
}
