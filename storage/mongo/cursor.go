package mongo

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// Cursors are base64url JSON carrying a hash of the request they belong
// to, so that a cursor replayed against another query is rejected with
// ErrBadCursor instead of silently paging something else. They are not
// secret: they only hold keyset positions.

func encodeCursor(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("mongo: encode cursor: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func decodeCursor(s string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return fmt.Errorf("cursor encoding: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("cursor content: %w", err)
	}
	return nil
}

// hashOf fingerprints the parts of a request that a cursor must match.
func hashOf(parts ...any) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%v\x00", p)
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:12])
}
