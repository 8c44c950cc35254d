//go:build !linux

package file

import "github.com/walgo/walgo/storage"

// Outside Linux the file backend keeps no metadata.
func setMetadata(string, storage.Metadata) error   { return nil }
func getMetadata(string) (storage.Metadata, error) { return nil, nil }
