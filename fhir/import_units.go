package fhir

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Reading the inputs of an import: NDJSON lines and Bundle entries as
// units, with the offsets that drive progress and resume.

// unit is one resource to import and where it came from.
type unit struct {
	line, entry int
	raw         []byte
}

// ReadImportFile calls fn for each resource of an import file, in order:
// each line of an NDJSON file (line is 1-based, entry -1), each entry of
// a Bundle after FlattenBundle (entry 0-based, line 0), or the one
// resource of another JSON file. It stops at fn's first error.
func ReadImportFile(path string, fn func(line, entry int, raw []byte) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer f.Close()
	next := bundleUnits(f)
	if strings.HasSuffix(path, ".ndjson") {
		next = ndjsonUnits(f)
	}
	for {
		u, _, err := next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if err := fn(u.line, u.entry, u.raw); err != nil {
			return err
		}
	}
}

// importSource tracks the position in one input.
type importSource struct {
	name string
	skip int // units committed before (resume)
	next int // units consumed so far
}

// unitReader yields the next unit and the input offset after it; io.EOF ends.
type unitReader func() (unit, int64, error)

func ndjsonUnits(r io.Reader) unitReader {
	br := bufio.NewReaderSize(r, 1<<20)
	var offset int64
	line := 0
	return func() (unit, int64, error) {
		for {
			b, err := br.ReadSlice('\n')
			if errors.Is(err, bufio.ErrBufferFull) {
				// A long line: gather it in full, up to the limit.
				full := append([]byte(nil), b...)
				for errors.Is(err, bufio.ErrBufferFull) && len(full) < maxImportLine {
					b, err = br.ReadSlice('\n')
					full = append(full, b...)
				}
				b = full
			}
			if err != nil && !errors.Is(err, io.EOF) {
				if errors.Is(err, bufio.ErrBufferFull) {
					return unit{}, offset, fmt.Errorf("line %d is longer than %d bytes", line+1, maxImportLine)
				}
				return unit{}, offset, fmt.Errorf("reading line %d: %w", line+1, err)
			}
			offset += int64(len(b))
			if len(b) == 0 && errors.Is(err, io.EOF) {
				return unit{}, offset, io.EOF
			}
			line++
			t := bytes.TrimSpace(b)
			if len(t) == 0 {
				if errors.Is(err, io.EOF) {
					return unit{}, offset, io.EOF
				}
				continue
			}
			return unit{line: line, entry: -1, raw: append([]byte(nil), t...)}, offset, nil
		}
	}
}

// bundleUnits reads a whole JSON file: a Bundle yields its entries (see
// FlattenBundle), any other resource itself.
func bundleUnits(r io.Reader) unitReader {
	var units []unit
	var size int64
	var loadErr error
	loaded := false
	i := 0
	return func() (unit, int64, error) {
		if !loaded {
			loaded = true
			raw, err := io.ReadAll(r)
			if err != nil {
				loadErr = fmt.Errorf("reading: %w", err)
			} else {
				size = int64(len(raw))
				var probe struct {
					ResourceType string `json:"resourceType"`
				}
				if err := json.Unmarshal(raw, &probe); err != nil {
					loadErr = fmt.Errorf("not a JSON resource: %w", err)
				} else if probe.ResourceType == "Bundle" {
					entries, err := FlattenBundle(raw)
					if err != nil {
						loadErr = err
					}
					for n, e := range entries {
						units = append(units, unit{entry: n, raw: e})
					}
				} else {
					units = []unit{{entry: -1, raw: raw}}
				}
			}
		}
		if loadErr != nil {
			return unit{}, 0, loadErr
		}
		if i >= len(units) {
			return unit{}, size, io.EOF
		}
		u := units[i]
		i++
		return u, size * int64(i) / int64(len(units)), nil
	}
}

// FlattenBundle turns a transaction, batch or collection Bundle into its
// resources, each with a stable id: the one in request.url ("Type/id"),
// else resource.id, else the uuid of a "urn:uuid:" fullUrl, else the id
// of an absolute fullUrl, else a new one. References to an entry's fullUrl
// anywhere in the Bundle are rewritten to "Type/id", which is what a
// transaction does (http.html#trules). Entries without a resource (DELETE,
// GET) are not imports and are rejected.
func FlattenBundle(raw []byte) ([][]byte, error) {
	v, err := DecodeJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("decoding Bundle: %w", err)
	}
	b, ok := v.(map[string]any)
	if !ok || b["resourceType"] != "Bundle" {
		return nil, errors.New("not a Bundle")
	}
	entries, _ := b["entry"].([]any)
	type ent struct {
		res map[string]any
	}
	list := make([]ent, 0, len(entries))
	refs := map[string]string{}
	for i, e := range entries {
		em, _ := e.(map[string]any)
		res, _ := em["resource"].(map[string]any)
		if res == nil {
			return nil, fmt.Errorf("entry[%d] has no resource: only Bundles of resources can be imported", i)
		}
		typ, _ := res["resourceType"].(string)
		fullURL, _ := em["fullUrl"].(string)
		req, _ := em["request"].(map[string]any)
		reqURL, _ := req["url"].(string)
		id := ""
		if t, rid, ok := strings.Cut(reqURL, "/"); ok && t == typ && ValidID(rid) {
			id = rid
		} else if rid, _ := res["id"].(string); ValidID(rid) {
			id = rid
		} else if u, ok := strings.CutPrefix(fullURL, "urn:uuid:"); ok && ValidID(u) {
			id = u
		} else if i := strings.LastIndex(fullURL, "/"+typ+"/"); i >= 0 && ValidID(fullURL[i+len(typ)+2:]) {
			id = fullURL[i+len(typ)+2:]
		} else {
			id = randomID()
		}
		res["id"] = id
		if fullURL != "" {
			refs[fullURL] = typ + "/" + id
		}
		list = append(list, ent{res: res})
	}
	out := make([][]byte, 0, len(list))
	for _, e := range list {
		rewriteRefs(e.res, refs)
		enc, err := EncodeResource(e.res)
		if err != nil {
			return nil, fmt.Errorf("encoding %v/%v: %w", e.res["resourceType"], e.res["id"], err)
		}
		out = append(out, enc)
	}
	return out, nil
}

func rewriteRefs(v any, refs map[string]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			if s, ok := c.(string); ok && k == "reference" {
				if to, ok := refs[s]; ok {
					x[k] = to
				}
				continue
			}
			rewriteRefs(c, refs)
		}
	case []any:
		for _, c := range x {
			rewriteRefs(c, refs)
		}
	}
}
