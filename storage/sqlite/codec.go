package sqlite

import (
	_ "embed" // the zstd dictionaries
	"fmt"
	"runtime"

	"github.com/klauspost/compress/zstd"
)

// Stored encodings of versions.json and versions.entries (schema 5).
//
// Every value written since is compressed, its first byte a tag naming the
// encoding of the rest (the bytes stored are whatever the caller handed
// over, JSON or not):
//
//	0x01  zstd frame compressed with dictionary zdict/json-1.dict (ID 1): a resource's JSON
//	0x02  zstd frame compressed with dictionary zdict/entries-1.dict (ID 2): a version's entries
//
// A value with any other first byte is read as it is: the rows written
// before schema 5 (JSON, which starts with '{' or '[', never a tag), and
// the "[]" of a version without entries.
// The dictionaries are part of the on-disk format: never change a
// committed one (TestCodecPinned decodes committed samples and checks
// their digests); a new dictionary gets a new tag and ID, and the old
// ones stay readable. json-1 was trained with
// github.com/klauspost/compress/dict (64 KB, HashBytes 6) on 10,000
// stored resources of a bench/synth import and 7,000 resources of the
// 43 Synthea bundles of the reference data; entries-1 on the entries of
// 10,000 versions of the same import. Short documents compress poorly
// without one (about 1.9x for the stored Observations, 4.8x with it).
const (
	tagJSON1    byte = 0x01
	tagEntries1 byte = 0x02
)

var (
	//go:embed zdict/json-1.dict
	dictJSON1 []byte
	//go:embed zdict/entries-1.dict
	dictEntries1 []byte
)

// codec compresses and decompresses the stored columns. Its encoders and
// decoder are safe for concurrent use (EncodeAll, DecodeAll).
type codec struct {
	json, entries *zstd.Encoder
	dec           *zstd.Decoder
}

func newCodec() (*codec, error) {
	opts := []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderCRC(false),
		zstd.WithSingleSegment(true), zstd.WithEncoderConcurrency(1)}
	j, err := zstd.NewWriter(nil, append(opts, zstd.WithEncoderDict(dictJSON1))...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: json codec: %w", err)
	}
	e, err := zstd.NewWriter(nil, append(opts, zstd.WithEncoderDict(dictEntries1))...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: entries codec: %w", err)
	}
	d, err := zstd.NewReader(nil, zstd.WithDecoderDicts(dictJSON1, dictEntries1), zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)))
	if err != nil {
		return nil, fmt.Errorf("sqlite: codec decoder: %w", err)
	}
	return &codec{json: j, entries: e, dec: d}, nil
}

func (c *codec) close() {
	if c != nil {
		c.dec.Close()
	}
}

func (c *codec) encodeJSON(raw []byte) []byte { return c.encode(c.json, tagJSON1, raw) }

func (c *codec) encodeEntries(raw []byte) []byte { return c.encode(c.entries, tagEntries1, raw) }

func (c *codec) encode(e *zstd.Encoder, tag byte, raw []byte) []byte {
	out := make([]byte, 1, 1+len(raw)/2)
	out[0] = tag
	return e.EncodeAll(raw, out)
}

// decode returns the bytes of a stored value as they were handed over
// (nil for NULL).
func (c *codec) decode(stored []byte) ([]byte, error) {
	if len(stored) == 0 || (stored[0] != tagJSON1 && stored[0] != tagEntries1) {
		return stored, nil
	}
	out, err := c.dec.DecodeAll(stored[1:], nil)
	if err != nil {
		return nil, fmt.Errorf("sqlite: decode stored value (tag %#x): %w", stored[0], err)
	}
	return out, nil
}
