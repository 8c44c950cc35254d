package logical

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage/file"
)

// TestClaimName: a name of this second that is taken (a sentinel, or only
// data of a dump still running) is never reused.
func TestClaimName(t *testing.T) {
	ctx := context.Background()
	for _, what := range []string{"sentinel", "data"} {
		t.Run(what, func(t *testing.T) {
			st, err := file.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			taken := map[string]bool{}
			for i := range 2 { // this second and the next
				name := catalog.DumpName(now.Add(time.Duration(i) * time.Second))
				taken[name] = true
				key := catalog.DumpKey(name, codec.Zstd{})
				if what == "sentinel" {
					key = catalog.DumpSentinelKey(name)
				}
				if err := st.Put(ctx, key, strings.NewReader("x")); err != nil {
					t.Fatal(err)
				}
			}
			start, name, err := claimName(ctx, st)
			if err != nil {
				t.Fatal(err)
			}
			if taken[name] || name != catalog.DumpName(start) || !catalog.ValidDumpName(name) {
				t.Fatalf("claimed %s (start %s); taken: %v", name, start, taken)
			}
		})
	}
}
