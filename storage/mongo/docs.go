package mongo

import (
	"slices"
	"strconv"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// resourceDoc is a document of the resources collection (the current version).
type resourceDoc struct {
	ID      string     `bson:"_id"`
	Type    string     `bson:"t"`
	LID     string     `bson:"i"`
	Version int64      `bson:"v"`
	Updated time.Time  `bson:"u"`
	Nanos   int64      `bson:"un"`
	Deleted bool       `bson:"d"`
	Method  string     `bson:"m"`
	JSON    []byte     `bson:"j"`
	Seq     int64      `bson:"s"`
	Claim   string     `bson:"c,omitempty"`
	Keys    []string   `bson:"k"`
	Entries []entryDoc `bson:"e"`
	// Order is the sort keys denormalised from Entries (see order.go).
	Order map[string]orderDoc `bson:"o,omitempty"`
	// PK is the partition key (see partition.go); empty without partitioning.
	PK string `bson:"pk,omitempty"`
	// Pending names the commit record that has locked this resource; the
	// document still holds the version before that commit (see atomic.go).
	Pending string `bson:"pc,omitempty"`
	// Placeholder marks the lock of a resource a pending commit creates.
	Placeholder bool `bson:"ph,omitempty"`
}

// historyDoc is a document of the history collection (one version).
type historyDoc struct {
	ID      string    `bson:"_id"`
	Type    string    `bson:"t"`
	LID     string    `bson:"i"`
	Version int64     `bson:"v"`
	Updated time.Time `bson:"u"`
	Nanos   int64     `bson:"un"`
	Deleted bool      `bson:"d"`
	Method  string    `bson:"m"`
	JSON    []byte    `bson:"j"`
	Seq     int64     `bson:"s"`
	// Wall is when the document was written, to recognise the leftover
	// of an interrupted write (see orphan).
	Wall time.Time `bson:"w"`
	// Pending names the commit record that wrote this version; it is
	// visible only once that commit is decided (see atomic.go).
	Pending string     `bson:"pc,omitempty"`
	Own     ownEntries `bson:",inline"`
}

// ownEntries are a version's own index entries in the shapes of a
// resource document (k, e), for filtered history; a delete holds a copy of
// the deleted version's. Kept (ek) tells an empty list from a version
// written before history documents carried entries, which a filtered
// history never shows.
type ownEntries struct {
	Keys    []string   `bson:"k,omitempty"`
	Entries []entryDoc `bson:"e,omitempty"`
	Kept    bool       `bson:"ek,omitempty"`
}

func ownEntriesOf(es []storage.Entry) ownEntries {
	return ownEntries{Keys: keysOf(es), Entries: toEntryDocs(es), Kept: true}
}

// entries returns the entries, nil when they were not kept.
func (o *ownEntries) entries() []storage.Entry {
	if !o.Kept {
		return nil
	}
	if es := fromEntryDocs(o.Entries); es != nil {
		return es
	}
	return []storage.Entry{}
}

// entryDoc is storage.Entry as stored; the field names are the ones the
// query translation uses (see fieldName).
type entryDoc struct {
	Param   string `bson:"p"`
	Kind    int32  `bson:"k"`
	Text    string `bson:"t,omitempty"`
	Exact   string `bson:"x,omitempty"`
	System  string `bson:"s,omitempty"`
	Code    string `bson:"c,omitempty"`
	RefType string `bson:"rt,omitempty"`
	RefID   string `bson:"ri,omitempty"`
	RefURL  string `bson:"ru,omitempty"`
	// The range fields are always present on the kinds they belong to
	// (see alwaysNumeric), so that a range condition needs no "or missing"
	// clause and stays bounded on the e.lo / e.nl indexes; elsewhere a
	// zero is omitted.
	Low     *int64     `bson:"lo,omitempty"`
	High    *int64     `bson:"hi,omitempty"`
	NumLow  *float64   `bson:"nl,omitempty"`
	NumHigh *float64   `bson:"nh,omitempty"`
	Num     *float64   `bson:"n,omitempty"`
	Parts   []entryDoc `bson:"parts,omitempty"`
}

// fieldName maps a storage.Field to its entryDoc field.
func fieldName(f storage.Field) (string, bool) {
	switch f {
	case storage.FieldText:
		return "t", true
	case storage.FieldExact:
		return "x", true
	case storage.FieldSystem:
		return "s", true
	case storage.FieldCode:
		return "c", true
	case storage.FieldRefType:
		return "rt", true
	case storage.FieldRefID:
		return "ri", true
	case storage.FieldRefURL:
		return "ru", true
	case storage.FieldLow:
		return "lo", true
	case storage.FieldHigh:
		return "hi", true
	case storage.FieldNumLow:
		return "nl", true
	case storage.FieldNumHigh:
		return "nh", true
	case storage.FieldNum:
		return "n", true
	}
	return "", false
}

func toEntryDocs(es []storage.Entry) []entryDoc {
	if es == nil {
		return []entryDoc{}
	}
	out := make([]entryDoc, len(es))
	for i, e := range es {
		out[i] = entryDoc{
			Param: e.Param, Kind: int32(e.Kind), Text: e.Text, Exact: e.Exact,
			System: e.System, Code: e.Code, RefType: e.RefType, RefID: e.RefID, RefURL: e.RefURL,
		}
		dates, nums := alwaysNumeric(e.Kind)
		out[i].Low, out[i].High = optional(e.Low, dates), optional(e.High, dates)
		out[i].NumLow, out[i].NumHigh, out[i].Num = optional(e.NumLow, nums), optional(e.NumHigh, nums), optional(e.Num, nums)
		if len(e.Parts) > 0 {
			out[i].Parts = toEntryDocs(e.Parts)
		}
	}
	return out
}

func fromEntryDocs(ds []entryDoc) []storage.Entry {
	if len(ds) == 0 {
		return nil
	}
	out := make([]storage.Entry, len(ds))
	for i, d := range ds {
		out[i] = storage.Entry{
			Param: d.Param, Kind: storage.Kind(d.Kind), Text: d.Text, Exact: d.Exact,
			System: d.System, Code: d.Code, RefType: d.RefType, RefID: d.RefID, RefURL: d.RefURL,
			Low: deref(d.Low), High: deref(d.High), NumLow: deref(d.NumLow), NumHigh: deref(d.NumHigh), Num: deref(d.Num),
			Parts: fromEntryDocs(d.Parts),
		}
	}
	return out
}

// alwaysNumeric tells which range fields a kind always stores.
func alwaysNumeric(k storage.Kind) (dates, nums bool) {
	switch k {
	case storage.KindDate:
		return true, false
	case storage.KindNumber, storage.KindQuantity:
		return false, true
	}
	return false, false
}

func optional[T int64 | float64](v T, always bool) *T {
	if v == 0 && !always {
		return nil
	}
	return &v
}

func deref[T int64 | float64](p *T) T {
	if p == nil {
		return 0
	}
	return *p
}

// The k key vocabulary. The unit separator cannot occur in parameter names
// and makes the parts unambiguous.
const sep = "\x1f"

func markerKey(param string, k storage.Kind) string {
	return param + sep + strconv.Itoa(int(k))
}

func fieldKey(param string, k storage.Kind, f storage.Field, value string) string {
	return markerKey(param, k) + sep + strconv.Itoa(int(f)) + sep + value
}

func refKey(param, typ, id string) string {
	return markerKey(param, storage.KindReference) + sep + "ref" + sep + typ + "/" + id
}

var stringFields = [...]storage.Field{
	storage.FieldText, storage.FieldExact, storage.FieldSystem, storage.FieldCode,
	storage.FieldRefType, storage.FieldRefID, storage.FieldRefURL,
}

// keysOf computes the k array of a resource from its entries.
func keysOf(es []storage.Entry) []string {
	keys := make([]string, 0, 3*len(es))
	for i := range es {
		e := &es[i]
		keys = append(keys, markerKey(e.Param, e.Kind))
		for _, f := range stringFields {
			if v := storage.StringField(e, f); v != "" {
				keys = append(keys, fieldKey(e.Param, e.Kind, f, v))
			}
		}
		if e.Kind == storage.KindReference && e.RefType != "" && e.RefID != "" {
			keys = append(keys, refKey(e.Param, e.RefType, e.RefID))
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

func resourceKey(typ, id string) string { return typ + "/" + id }

func historyKey(typ, id string, v int64) string {
	return typ + "/" + id + "/" + strconv.FormatInt(v, 10)
}

// instant returns the stored time; un keeps the caller's exact instant.
func instant(u time.Time, nanos int64) time.Time {
	if nanos != 0 {
		return time.Unix(0, nanos).UTC()
	}
	return u.UTC()
}

func (d *resourceDoc) record() storage.Record {
	return storage.Record{
		Type: d.Type, ID: d.LID, VersionID: d.Version, LastUpdated: instant(d.Updated, d.Nanos),
		Deleted: d.Deleted, Method: d.Method, JSON: d.JSON, Seq: d.Seq,
	}
}

func (d *historyDoc) record() storage.Record {
	return storage.Record{
		Type: d.Type, ID: d.LID, VersionID: d.Version, LastUpdated: instant(d.Updated, d.Nanos),
		Deleted: d.Deleted, Method: d.Method, JSON: d.JSON, Seq: d.Seq,
	}
}
