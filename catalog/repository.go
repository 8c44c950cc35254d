package catalog

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/walgo/walgo/storage"
)

// RepositoryKey is the object that makes a prefix a walgo repository. It
// is written once, by InitRepository, and never changed.
const RepositoryKey = "walgo_repository.json"

// RepositoryFormat is the newest repository format this walgo reads.
const RepositoryFormat = 1

// probePrefix names the objects InitRepository writes to learn what the
// storage does; each is deleted again.
const probePrefix = "walgo_probe_"

var (
	// ErrNoRepository: the storage holds no walgo repository (nobody ran
	// walgo init there, the folder is missing, a volume is not mounted, a
	// prefix is mistyped). Nothing is created by accident.
	ErrNoRepository = errors.New("no walgo repository")
	// ErrRepositoryExists: InitRepository found a repository already.
	ErrRepositoryExists = errors.New("walgo repository exists already")
)

// Repository is what RepositoryKey holds.
type Repository struct {
	// ID names this incarnation of the repository: a repository emptied
	// and created again under the same URL has another one, so what was
	// learnt about the old one (wal-push's look-ahead markers) is not
	// trusted for the new.
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	Format  int       `json:"format"`
	// WalgoVersion is the walgo that created it.
	WalgoVersion string `json:"walgo_version"`
	// Storage is what InitRepository found the storage does.
	Storage Capabilities `json:"storage"`
}

// Capabilities are what the storage behind a repository was found to do
// when the repository was created.
type Capabilities struct {
	// CreateOnly: a create-only write (S3 If-None-Match: *) of a taken key
	// fails. Where false, walgo checks before each such write and warns.
	CreateOnly bool `json:"create_only"`
	// Metadata: objects keep the metadata written with them (the plain
	// content's sha256 of WAL files), so a re-push is confirmed by a Stat.
	Metadata bool `json:"metadata"`
	// CreateRefused: the server refuses create-only writes outright
	// (NotImplemented): walgo checks, then writes without the condition
	// and without metadata.
	CreateRefused bool `json:"create_refused,omitempty"`
}

// Store returns s as this repository's storage is used: a server found to
// ignore create-only writes gets storage.WithCheckedCreate, one that
// refuses them storage.WithCheckedPut.
func (r Repository) Store(s storage.Store, log *zap.Logger) storage.Store {
	switch {
	case r.Storage.CreateRefused:
		return storage.WithCheckedPut(s, log)
	case !r.Storage.CreateOnly:
		return storage.WithCheckedCreate(s, log)
	}
	return s
}

// ReadRepository reads the repository s holds: an error wrapping
// ErrNoRepository if there is none, one wrapping storage.ErrPermanent if
// walgo cannot read its description (damaged, or of a newer format).
func ReadRepository(ctx context.Context, s storage.Store) (Repository, error) {
	rc, err := s.Get(ctx, RepositoryKey)
	if errors.Is(err, storage.ErrNotFound) {
		return Repository{}, fmt.Errorf("%w in %s (%s is missing): create one with `walgo init`, or check WALGO_STORAGE (a mistyped path or prefix, an unmounted volume)",
			ErrNoRepository, s, RepositoryKey)
	}
	if err != nil {
		return Repository{}, fmt.Errorf("read %s: %w", RepositoryKey, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 64<<10))
	if err != nil {
		return Repository{}, fmt.Errorf("read %s: %w", RepositoryKey, err)
	}
	return parseRepository(b, s.String())
}

func parseRepository(b []byte, where string) (Repository, error) {
	var r Repository
	if err := json.Unmarshal(b, &r); err != nil || r.ID == "" || r.Format < 1 {
		msg := "no id or format"
		if err != nil {
			msg = err.Error()
		}
		return Repository{}, fmt.Errorf("%w: %s in %s is not a walgo repository description: %s", storage.ErrPermanent, RepositoryKey, where, msg)
	}
	if r.Format > RepositoryFormat {
		return Repository{}, fmt.Errorf("%w: the repository in %s has format %d, made by walgo %s; this walgo reads up to %d: upgrade walgo",
			storage.ErrPermanent, where, r.Format, r.WalgoVersion, RepositoryFormat)
	}
	return r, nil
}

// InitRepository makes s a walgo repository: it learns what the storage
// does (a probe object created twice: does the second create fail? does
// the metadata come back?), then creates RepositoryKey with a new ID. s
// may hold objects already (WAL-G's, or an older walgo's, which had no
// RepositoryKey). If it holds a repository, InitRepository returns that
// one and an error wrapping ErrRepositoryExists, and changes nothing.
func InitRepository(ctx context.Context, s storage.Store, walgoVersion string, now time.Time) (Repository, error) {
	if r, err := ReadRepository(ctx, s); err == nil {
		return r, fmt.Errorf("%w in %s (id %s, created %s)", ErrRepositoryExists, s, r.ID, r.Created.Format(time.RFC3339))
	} else if !errors.Is(err, ErrNoRepository) {
		return Repository{}, err
	}
	caps, err := probe(ctx, s)
	if err != nil {
		return Repository{}, err
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return Repository{}, err
	}
	r := Repository{ID: hex.EncodeToString(id[:]), Created: now.UTC().Truncate(time.Second), Format: RepositoryFormat, WalgoVersion: walgoVersion, Storage: caps}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return Repository{}, err
	}
	err = r.Store(s, nil).Create(ctx, RepositoryKey, bytes.NewReader(append(b, '\n')), nil)
	if errors.Is(err, storage.ErrExists) {
		// Another init won the race: that one is the repository.
		other, rerr := ReadRepository(ctx, s)
		if rerr != nil {
			return Repository{}, rerr
		}
		return other, fmt.Errorf("%w in %s (id %s, created just now)", ErrRepositoryExists, s, other.ID)
	}
	if err != nil {
		return Repository{}, fmt.Errorf("create %s: %w", RepositoryKey, err)
	}
	return r, nil
}

// probe creates one object twice and reads its metadata back. A server
// that refuses the first create-only write is recorded as such.
func probe(ctx context.Context, s storage.Store) (Capabilities, error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return Capabilities{}, err
	}
	key := probePrefix + hex.EncodeToString(rnd[:])
	meta := storage.Metadata{MetaPlainSHA256: hex.EncodeToString(rnd[:])}
	if err := s.Create(ctx, key, bytes.NewReader([]byte("first\n")), meta); errors.Is(err, storage.ErrUnsupported) {
		return Capabilities{CreateRefused: true}, nil
	} else if err != nil {
		return Capabilities{}, fmt.Errorf("probe the storage: create %s: %w", key, err)
	}
	deleted := false
	defer func() {
		if !deleted {
			s.Delete(context.WithoutCancel(ctx), key)
		}
	}()
	var caps Capabilities
	err := s.Create(ctx, key, bytes.NewReader([]byte("second\n")), meta)
	switch {
	case errors.Is(err, storage.ErrExists):
		caps.CreateOnly = true
	case err != nil:
		return Capabilities{}, fmt.Errorf("probe the storage: create %s again: %w", key, err)
	}
	oi, err := s.Stat(ctx, key)
	if err != nil {
		return Capabilities{}, fmt.Errorf("probe the storage: stat %s: %w", key, err)
	}
	caps.Metadata = oi.Metadata[MetaPlainSHA256] == meta[MetaPlainSHA256]
	if err := s.Delete(ctx, key); err != nil {
		return Capabilities{}, fmt.Errorf("probe the storage: delete %s: %w", key, err)
	}
	deleted = true
	return caps, nil
}

// MetaPlainSHA256 is the metadata name of the sha256 (hex) of an object's
// plain content, before compression and encryption: what a re-push
// compares without reading the object back.
const MetaPlainSHA256 = "walgo-plain-sha256"

// RepositoryCacheTTL is how long a RepositoryCache is trusted before the
// repository's own description is read again: a repository deleted, or
// created again under the same URL, is noticed within that time, at the
// cost of one read per TTL.
const RepositoryCacheTTL = 5 * time.Minute

// RepositoryCache is a local copy of a repository's description, for the
// hooks (in pg_wal/walgo/repository), which must not read it at every call:
// a wal-push of a new file and a wal-fetch of a stored one are one request.
type RepositoryCache struct {
	Path string
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

type cachedRepository struct {
	Store      string     `json:"store"`
	Repository Repository `json:"repository"`
	Read       time.Time  `json:"read"`
}

// Read returns the description of s's repository: the cached copy when it
// is of s and younger than RepositoryCacheTTL and fresh is false, else the
// repository's own (ReadRepository), which then refreshes the copy. A copy
// that cannot be written costs only the next read.
func (c RepositoryCache) Read(ctx context.Context, s storage.Store, fresh bool, log *zap.Logger) (Repository, error) {
	now := time.Now()
	if c.Now != nil {
		now = c.Now()
	}
	if !fresh {
		if b, err := os.ReadFile(c.Path); err == nil {
			var cr cachedRepository
			age := time.Duration(-1)
			if json.Unmarshal(b, &cr) == nil {
				age = now.Sub(cr.Read)
			}
			if cr.Store == s.String() && cr.Repository.ID != "" && age >= 0 && age < RepositoryCacheTTL {
				return cr.Repository, nil
			}
		}
	}
	r, err := ReadRepository(ctx, s)
	if err != nil {
		return r, err
	}
	if err := c.save(cachedRepository{Store: s.String(), Repository: r, Read: now}); err != nil && log != nil {
		log.Debug("cache the repository description", zap.String("path", c.Path), zap.Error(err))
	}
	return r, nil
}

func (c RepositoryCache) save(cr cachedRepository) error {
	b, err := json.Marshal(cr)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(c.Path), 0o700); err != nil {
		return err
	}
	tmp := c.Path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, c.Path)
}
