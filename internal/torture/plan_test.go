package torture

import (
	"strings"
	"testing"
)

func TestGenerateIsAFunctionOfTheSeed(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		a, b := Generate(seed, 1, AllFeatures()).String(), Generate(seed, 1, AllFeatures()).String()
		if a != b {
			t.Fatalf("seed %d: two plans differ:\n%s\n---\n%s", seed, a, b)
		}
	}
	if Generate(1, 1, AllFeatures()).String() == Generate(2, 1, AllFeatures()).String() {
		t.Fatal("seeds 1 and 2 make the same plan")
	}
}

// TestGenerateCovers: every plan has every kind of step, deltas in a
// chain of at least three, and a fork with load, points and backups of
// its own.
func TestGenerateCovers(t *testing.T) {
	seen := map[string]bool{}
	checksumsOff := false
	for seed := uint64(1); seed <= 60; seed++ {
		p := Generate(seed, 1, AllFeatures())
		if !p.Checksums {
			checksumsOff = true
		}
		chain, longest := -1, 0
		forkPoints, forkBackups := 0, 0
		points := map[int]bool{}
		for _, s := range p.Steps {
			switch s.Kind {
			case KindBackup:
				if s.Cluster == 0 {
					if s.Delta {
						chain++
						longest = max(longest, chain)
					} else {
						chain = 0
					}
				} else {
					forkBackups++
				}
			case KindPoint:
				points[s.Point] = true
				if s.Cluster > 0 {
					forkPoints++
				}
			case KindFork:
				seen["fork"] = true
				if !points[s.Origin] {
					t.Errorf("seed %d: step %d forks from point %d, which comes later or never", seed, s.N, s.Origin)
				}
				if open := openPrepared(p, s.Origin); len(open) > 0 {
					t.Errorf("seed %d: step %d forks from point %d, where %v are prepared", seed, s.N, s.Origin, open)
				}
			case KindSQL:
				for _, w := range []string{"unlogged table", "tablespace " + TablespaceName, "set tablespace", "prepare transaction",
					"commit prepared", "rollback prepared", "vacuum (freeze)", "truncate", "drop table", "create index",
					"string_agg(md5", "nextval", "pg_switch_wal", "checkpoint", "delete from", "update "} {
					if strings.Contains(s.SQL, w) {
						seen[w] = true
					}
				}
				if strings.Contains(s.What, "cold") {
					seen["cold"] = true
				}
			}
		}
		whats := map[string]bool{}
		for _, s := range p.Steps {
			if s.Kind == KindSQL {
				w, _, _ := strings.Cut(s.What, " (")
				whats[w] = true
			}
		}
		for _, w := range []string{"insert", "insert with large values", "update hot", "delete hot", "update cold", "delete cold",
			"delete tail", "vacuum", "vacuum freeze", "checkpoint", "switch wal", "sequence", "create table", "drop table",
			"truncate", "create index", "create unlogged table", "set tablespace", "prepare transaction", "commit prepared",
			"rollback prepared", "create database", "drop database", "move database"} {
			if !whats[w] {
				t.Errorf("seed %d: no %q step:\n%s", seed, w, p)
			}
		}
		if longest < 3 {
			t.Errorf("seed %d: the primary's longest delta chain has %d deltas, want at least 3:\n%s", seed, longest, p)
		}
		if seen["fork"] && (forkPoints == 0 || forkBackups == 0) {
			t.Errorf("seed %d: the fork has %d points and %d backups:\n%s", seed, forkPoints, forkBackups, p)
		}
	}
	for _, w := range []string{"fork", "cold", "unlogged table", "tablespace " + TablespaceName, "set tablespace", "prepare transaction",
		"commit prepared", "rollback prepared", "vacuum (freeze)", "truncate", "drop table", "create index", "string_agg(md5",
		"nextval", "pg_switch_wal", "checkpoint", "delete from", "update "} {
		if !seen[w] {
			t.Errorf("no plan of seeds 1-60 has %q", w)
		}
	}
	if !checksumsOff {
		t.Error("no plan of seeds 1-60 runs without data checksums")
	}
}

func TestGenerateLeavesOutFeatures(t *testing.T) {
	for seed := uint64(1); seed <= 10; seed++ {
		p := Generate(seed, 1, Features{})
		if !p.Checksums {
			t.Errorf("seed %d: checksums off without the feature", seed)
		}
		for _, s := range p.Steps {
			bad := s.Kind == KindFork || s.Delta
			for _, w := range []string{"unlogged", "tablespace", "prepare", "truncate", "drop table", "create index", "string_agg", "database"} {
				bad = bad || strings.Contains(s.SQL, w)
			}
			if strings.Contains(s.What, "cold") || strings.Contains(s.What, "tail") {
				bad = true
			}
			if bad {
				t.Errorf("seed %d: step needs a feature that is off: %s", seed, s)
			}
		}
	}
}

func TestParseFeatures(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		err  bool
	}{
		{"all", AllFeatures().String(), false},
		{"", "", false},
		{"fork, deltas", "deltas,fork", false},
		{"fork,nope", "", true},
	} {
		f, err := ParseFeatures(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("ParseFeatures(%q): error %v", tc.in, err)
			continue
		}
		if err == nil && f.String() != tc.want {
			t.Errorf("ParseFeatures(%q) = %q, want %q", tc.in, f, tc.want)
		}
	}
	if got := AllFeatures().Without(Fork, Deltas); got[Fork] || got[Deltas] || !got[Toast] {
		t.Errorf("Without: %s", got)
	}
}

// openPrepared lists the prepared transactions open on the primary at a
// point, read from the plan's SQL.
func openPrepared(p *Plan, point int) []string {
	open := map[string]bool{}
	for _, s := range p.Steps {
		if s.Kind == KindPoint && s.Point == point {
			break
		}
		if s.Cluster != 0 || s.Kind != KindSQL {
			continue
		}
		if _, gid, ok := strings.Cut(s.SQL, "prepare transaction '"); ok {
			open[strings.TrimSuffix(gid, "'")] = true
		}
		for _, verb := range []string{"commit prepared '", "rollback prepared '"} {
			if rest, ok := strings.CutPrefix(s.SQL, verb); ok {
				delete(open, strings.TrimSuffix(rest, "'"))
			}
		}
	}
	var ids []string
	for id := range open {
		ids = append(ids, id)
	}
	return ids
}
