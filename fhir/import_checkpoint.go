package fhir

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// Resuming an import: a file's progress is a checkpoint in the KV.

// checkpoint records how many units of a file are committed. The key
// names the file's absolute path, size and modification time, so an
// edited file is imported afresh. It is stored in the same Commit as the
// batch it counts (storage.KVCommitter), so that a resumed import neither
// repeats nor loses a unit whenever the last run was interrupted (Ctrl-C,
// kill -9, power loss). On other backends it is stored right after the
// Commit; an interruption in between repeats that batch (kept ids: new
// versions; a transaction Bundle: its creates once more).
type checkpoint struct {
	Done     int  `json:"done"`
	Complete bool `json:"complete"`
}

// fileCheckpoint writes the checkpoints of one file.
type fileCheckpoint struct {
	kv   storage.KV
	key  string
	path string
}

// put is the checkpoint record saying done units are stored.
func (fc *fileCheckpoint) put(done int, complete bool) storage.KVPut {
	raw, _ := json.Marshal(checkpoint{Done: done, Complete: complete})
	return storage.KVPut{Key: fc.key, Value: raw, TTL: importCheckpointTTL}
}

// save stores the checkpoint on its own, for what no Commit carried.
func (fc *fileCheckpoint) save(ctx context.Context, done int, complete bool) error {
	if fc == nil {
		return nil
	}
	p := fc.put(done, complete)
	if err := fc.kv.Put(ctx, p.Key, p.Value, p.TTL); err != nil {
		return fmt.Errorf("saving import checkpoint of %s: %w", fc.path, err)
	}
	return nil
}

func checkpointKey(path string) (string, error) {
	id, err := ImportFileID(path)
	if err != nil {
		return "", err
	}
	return importCheckpointPrefix + id, nil
}

// ImportFileID identifies a file's content for resuming: its absolute
// path, size and modification time, hashed.
func ImportFileID(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", path, err)
	}
	info, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	h := sha256.Sum256([]byte(abs + "|" + strconv.FormatInt(info.Size(), 10) + "|" + info.ModTime().UTC().Format(time.RFC3339Nano)))
	return hex.EncodeToString(h[:16]), nil
}
