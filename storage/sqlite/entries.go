package sqlite

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/anodyne-fhir/anodyne/storage"
)

// The entries of each version (versions.entries) are stored as the JSON of
// []storage.Entry with the field names of its json tags (p, k, t, x, s, c,
// rt, ri, ru, lo, hi, nl, nh, n, parts; zero values omitted, Kind as its
// number). That encoding is on disk: TestEntriesEncodingPinned holds it.
// A version without entries is "[]", never NULL: NULL means "written
// before schema 3", which a filtered history treats as unknown. Since
// schema 5 the JSON is stored compressed (codec.go); "[]" stays plain.

func encodeEntries(cd *codec, es []storage.Entry) ([]byte, error) {
	if len(es) == 0 {
		return []byte("[]"), nil
	}
	b, err := json.Marshal(es)
	if err != nil {
		return nil, fmt.Errorf("encode index entries: %w", err)
	}
	return cd.encodeEntries(b), nil
}

// decodeEntries returns nil for NULL (unknown) and a non-nil slice otherwise.
func decodeEntries(cd *codec, stored []byte) ([]storage.Entry, error) {
	if stored == nil {
		return nil, nil
	}
	raw, err := cd.decode(stored)
	if err != nil {
		return nil, fmt.Errorf("decode index entries: %w", err)
	}
	out := []storage.Entry{}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("decode index entries: %w", err)
	}
	return out, nil
}

// insertVersionRefs records the local references among es for version seq.
// Every reference entry with an id is kept, typed or not, so that the rows
// are a superset of what a RefID condition can match.
func insertVersionRefs(ctx context.Context, st *stmts, seq int64, es []storage.Entry) error {
	for i := range es {
		e := &es[i]
		if e.Kind != storage.KindReference || e.RefID == "" {
			continue
		}
		if _, err := st.exec(ctx, `INSERT OR IGNORE INTO version_refs (param, ref_id, ref_type, seq) VALUES (?, ?, ?, ?)`,
			e.Param, e.RefID, e.RefType, seq); err != nil {
			return fmt.Errorf("version reference %s: %w", e.Param, err)
		}
	}
	return nil
}

func deleteVersionRefs(ctx context.Context, st *stmts, seq int64, es []storage.Entry) error {
	for i := range es {
		e := &es[i]
		if e.Kind != storage.KindReference || e.RefID == "" {
			continue
		}
		if _, err := st.exec(ctx, `DELETE FROM version_refs WHERE param = ? AND ref_id = ? AND ref_type = ? AND seq = ?`,
			e.Param, e.RefID, e.RefType, seq); err != nil {
			return fmt.Errorf("remove version reference %s: %w", e.Param, err)
		}
	}
	return nil
}
