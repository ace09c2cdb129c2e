package deid

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/anodyne-fhir/anodyne/conformance/fhirpath"
)

// Label systems written into meta.
const (
	// SecuritySystem is the v3 ObservationValue code system of meta.security.
	SecuritySystem = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
	// RulesTagSystem tags the output with the rule set's version.
	RulesTagSystem = "http://anodyne-fhir.org/fhir/CodeSystem/deid-rules"
	// AgeBandExtension marks an element withheld because it implies an age over 89.
	AgeBandExtension = "http://anodyne-fhir.org/fhir/StructureDefinition/age-band"
)

// label is the meta.security code each method leaves.
var label = map[string]string{
	"redact": "REDACTED", "cryptoHash": "PSEUDED", "dateShift": "PSEUDED",
	"generalize": "ABSTRED", "perturb": "MASKED", "substitute": "MASKED",
}

// Deidentifier applies one compiled rule set. It is immutable and safe
// for concurrent use.
type Deidentifier struct {
	version    string
	rules      []rule
	model      *fhirpath.Model
	restricted map[string]bool
	maxShift   int
	minCell    int
	now        func() time.Time
}

// Option configures New.
type Option func(*Deidentifier)

// WithNow sets the clock that ages are computed against.
func WithNow(now func() time.Time) Option { return func(d *Deidentifier) { d.now = now } }

// New compiles a rules file (DefaultRules() for the embedded one). A file
// that does not parse, names an unknown method or holds a FHIRPath that
// does not compile is a *RuleError naming the line and the reason.
func New(rulesFile []byte, opts ...Option) (*Deidentifier, error) {
	model, err := fhirpath.R4()
	if err != nil {
		return nil, fmt.Errorf("deid: loading the FHIR model: %w", err)
	}
	f, rules, err := compile(rulesFile, model)
	if err != nil {
		return nil, err
	}
	d := &Deidentifier{version: f.Version, rules: rules, model: model, restricted: map[string]bool{}, maxShift: f.Parameters.MaxShiftDays, now: time.Now}
	if d.maxShift <= 0 {
		d.maxShift = 365
	}
	if d.minCell = f.Parameters.MinCellPatients; d.minCell == 0 {
		d.minCell = 11
	}
	for _, z := range f.Parameters.RestrictedZip3 {
		d.restricted[z] = true
	}
	for _, o := range opts {
		o(d)
	}
	return d, nil
}

// MaxShiftDays bounds the date shift: ShiftDays(key, patient, MaxShiftDays()).
func (d *Deidentifier) MaxShiftDays() int { return d.maxShift }

// MinCellPatients is the small-cell threshold of aggregate answers.
func (d *Deidentifier) MinCellPatients() int { return d.minCell }

// Version is the rule set's version, as written in the output's meta.tag.
func (d *Deidentifier) Version() string { return d.version }

// Result tells the caller what Apply produced.
type Result struct {
	// Pseudonyms maps every pseudonym written ("Type/pseudonym") to the
	// stored reference it stands for ("Type/id"), so that requests naming
	// a pseudonym can be answered.
	Pseudonyms map[string]string
}

// Pseudonym is the pseudonym of Type/id under key: a keyed HMAC, so that
// the same resource has one pseudonym per project and projects cannot link.
func Pseudonym(key []byte, typ, id string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("id\x00" + typ + "/" + id))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// ShiftDays is the date shift of one patient under key: whole days back,
// between 1 and max, so intervals and times of day are kept.
func ShiftDays(key []byte, patient string, max int) int {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("shift\x00" + patient))
	return -int(binary.BigEndian.Uint64(m.Sum(nil)[:8])%uint64(max)) - 1
}

// Apply de-identifies res in place under the project key and returns it.
func (d *Deidentifier) Apply(res map[string]any, key []byte) (map[string]any, Result, error) {
	typ, _ := res["resourceType"].(string)
	r := &run{d: d, key: key, typ: typ, res: res, labels: map[string]bool{},
		decidedMap: map[uintptr]bool{}, decidedField: map[fieldKey]bool{}, parent: map[uintptr]fieldKey{},
		result: Result{Pseudonyms: map[string]string{}}}
	r.shift = ShiftDays(key, patientOf(res), d.maxShift)
	r.index(res, typ)
	for i := range d.rules {
		if err := r.apply(&d.rules[i]); err != nil {
			return nil, Result{}, fmt.Errorf("deid rule at line %d (%s): %w", d.rules[i].line, d.rules[i].spec.Path, err)
		}
	}
	cleanup(res)
	r.label()
	return res, r.result, nil
}

// patientOf is the patient whose date shift applies: the Patient itself,
// else the first Patient reference in the usual subject elements, else
// any Patient reference.
func patientOf(res map[string]any) string {
	if res["resourceType"] == "Patient" {
		id, _ := res["id"].(string)
		return "Patient/" + id
	}
	for _, k := range []string{"subject", "patient", "beneficiary", "individual", "who"} {
		if ref, ok := res[k].(map[string]any); ok {
			if s, _ := ref["reference"].(string); strings.HasPrefix(refTail(s), "Patient/") {
				return refTail(s)
			}
		}
	}
	var found string
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if s, ok := x["reference"].(string); ok && found == "" && strings.HasPrefix(refTail(s), "Patient/") {
				found = refTail(s)
			}
			for _, val := range x {
				walk(val)
			}
		case []any:
			for _, val := range x {
				walk(val)
			}
		}
	}
	walk(res)
	return found
}

// refTail is the Type/id part of a reference (relative or absolute).
func refTail(ref string) string {
	ref = strings.SplitN(ref, "/_history/", 2)[0]
	parts := strings.Split(ref, "/")
	if len(parts) < 2 {
		return ref
	}
	return parts[len(parts)-2] + "/" + parts[len(parts)-1]
}

type fieldKey struct {
	m   uintptr
	key string
}

func ptr(m map[string]any) uintptr { return reflect.ValueOf(m).Pointer() }

// typed is one complex node found by the typed walk.
type typed struct {
	m   map[string]any
	typ string
}

// typedField is one property found by the typed walk.
type typedField struct {
	m        map[string]any
	key, typ string
}

type run struct {
	d      *Deidentifier
	key    []byte
	typ    string
	res    map[string]any
	shift  int
	labels map[string]bool
	result Result

	decidedMap   map[uintptr]bool
	decidedField map[fieldKey]bool
	parent       map[uintptr]fieldKey
	maps         []typed
	fields       []typedField
}

// index walks the resource with the R4 model, recording each complex
// node's type and parent and each property's type.
func (r *run) index(m map[string]any, typ string) {
	r.maps = append(r.maps, typed{m, typ})
	for k, v := range m {
		if k == "resourceType" || strings.HasPrefix(k, "_") {
			continue
		}
		_, pt, _, ok := r.d.model.Property(typ, k)
		if !ok {
			continue
		}
		r.fields = append(r.fields, typedField{m, k, pt})
		each(v, func(x any) {
			if cm, ok := x.(map[string]any); ok {
				ct := pt
				if rt, ok := cm["resourceType"].(string); ok {
					ct = rt
				}
				r.parent[ptr(cm)] = fieldKey{ptr(m), k}
				r.index(cm, ct)
			}
		})
	}
}

func each(v any, fn func(any)) {
	if arr, ok := v.([]any); ok {
		for _, x := range arr {
			fn(x)
		}
		return
	}
	fn(v)
}

// mapDecided reports whether m or one of its ancestors was decided.
func (r *run) mapDecided(m map[string]any) bool {
	p := ptr(m)
	for {
		if r.decidedMap[p] {
			return true
		}
		fk, ok := r.parent[p]
		if !ok {
			return false
		}
		if r.decidedField[fk] {
			return true
		}
		p = fk.m
	}
}

func (r *run) fieldDecided(m map[string]any, key string) bool {
	return r.decidedField[fieldKey{ptr(m), key}] || r.mapDecided(m)
}

// apply runs one rule: it finds the nodes it selects that no earlier rule
// decided, decides them and applies the method.
func (r *run) apply(ru *rule) error {
	if ru.only != "" && ru.only != r.typ {
		return nil
	}
	var fields []fieldKeyed
	var maps []map[string]any
	switch {
	case ru.fastType != "":
		if ru.member == "" && r.d.model.IsPrimitive(ru.fastType) {
			for _, f := range r.fields {
				if f.typ == ru.fastType {
					fields = append(fields, fieldKeyed{f.m, f.key})
				}
			}
			break
		}
		for _, t := range r.maps {
			if t.typ == "" || !r.d.model.IsA(t.typ, ru.fastType) {
				continue
			}
			if ru.member == "" {
				maps = append(maps, t.m)
				continue
			}
			fields = append(fields, r.memberKeys(t.m, t.typ, ru.member)...)
		}
	case ru.parent != nil:
		parents, err := ru.parent.Evaluate(r.res)
		if err != nil {
			return err
		}
		for _, n := range parents {
			if m, ok := n.Value().(map[string]any); ok {
				fields = append(fields, r.memberKeys(m, n.Type(), ru.member)...)
			}
		}
	default:
		nodes, err := ru.expr.Evaluate(r.res)
		if err != nil {
			return err
		}
		for _, n := range nodes {
			m, ok := n.Value().(map[string]any)
			if !ok {
				return fmt.Errorf("the path selects a %s value: end it with the element's name (…%s) so the rule can change it", n.Type(), ".name")
			}
			maps = append(maps, m)
		}
	}
	for _, f := range fields {
		if _, ok := f.m[f.key]; !ok && f.m["_"+f.key] == nil {
			continue
		}
		if r.fieldDecided(f.m, f.key) {
			continue
		}
		r.decidedField[fieldKey{ptr(f.m), f.key}] = true
		if err := r.method(ru, f.m, f.key); err != nil {
			return err
		}
	}
	for _, m := range maps {
		if r.mapDecided(m) {
			continue
		}
		r.decidedMap[ptr(m)] = true
		if err := r.methodMap(ru, m); err != nil {
			return err
		}
	}
	return nil
}

type fieldKeyed struct {
	m   map[string]any
	key string
}

// memberKeys are the JSON keys of element member in m (a choice element
// has one typed key, e.g. value → valueQuantity).
func (r *run) memberKeys(m map[string]any, typ, member string) []fieldKeyed {
	var out []fieldKeyed
	for k := range m {
		if strings.HasPrefix(k, "_") {
			continue
		}
		if k == member {
			out = append(out, fieldKeyed{m, k})
			continue
		}
		if strings.HasPrefix(k, member) && len(k) > len(member) && k[len(member)] >= 'A' && k[len(member)] <= 'Z' {
			if el, _, _, ok := r.d.model.Property(typ, k); ok && el == member {
				out = append(out, fieldKeyed{m, k})
			}
		}
	}
	slices.SortFunc(out, func(a, b fieldKeyed) int { return strings.Compare(a.key, b.key) })
	return out
}

func (r *run) mark(method string) {
	if l := label[method]; l != "" {
		r.labels[l] = true
	}
}

// label writes meta.security and the rule set tag.
func (r *run) label() {
	meta, _ := r.res["meta"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		r.res["meta"] = meta
	}
	codes := make([]string, 0, len(r.labels))
	for c := range r.labels {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	sec, _ := meta["security"].([]any)
	for _, c := range codes {
		sec = append(sec, map[string]any{"system": SecuritySystem, "code": c})
	}
	if len(sec) > 0 {
		meta["security"] = sec
	}
	tags, _ := meta["tag"].([]any)
	meta["tag"] = append(tags, map[string]any{"system": RulesTagSystem, "code": r.d.version})
}

// cleanup removes what redaction emptied: nil array entries, empty
// objects and arrays, and extensions left without a value.
func cleanup(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			nv := cleanup(val)
			if nv == nil {
				delete(x, k)
			} else {
				x[k] = nv
			}
		}
		if len(x) == 0 {
			return nil
		}
		if _, hasURL := x["url"]; hasURL && len(x) == 1 {
			return nil // an extension whose value was removed
		}
		return x
	case []any:
		out := x[:0]
		for _, val := range x {
			if nv := cleanup(val); nv != nil {
				out = append(out, nv)
			}
		}
		if len(out) == 0 {
			return nil
		}
		return out
	}
	return v
}
