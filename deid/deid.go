package deid

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"reflect"
	"slices"
	"strings"
	"sync"
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

	// plans caches, per FHIR type of a node, which rules can select it
	// (type name -> *nodePlan); filled on first sight of each type.
	plans sync.Map
	// runs pools the per-call state of Apply (*run).
	runs sync.Pool
}

// nodePlan lists the rules of the descendants().ofType(T)[.member] form
// that select a node of one type, so that the walk sorts the nodes into
// each rule's selection once instead of every rule testing every node.
type nodePlan struct {
	objects []int // rules selecting an object of this type (or its member)
	fields  []int // rules selecting a primitive property of this type
}

// plan returns the rules that select a node of type typ: an object when
// typ is a complex type or resource, a property when it is a primitive.
func (d *Deidentifier) plan(typ string) *nodePlan {
	if p, ok := d.plans.Load(typ); ok {
		return p.(*nodePlan)
	}
	p := &nodePlan{}
	for i := range d.rules {
		ru := &d.rules[i]
		if ru.fastType == "" {
			continue
		}
		if ru.member == "" && d.model.IsPrimitive(ru.fastType) {
			if typ == ru.fastType {
				p.fields = append(p.fields, i)
			}
			continue
		}
		if typ != "" && d.model.IsA(typ, ru.fastType) {
			p.objects = append(p.objects, i)
		}
	}
	got, _ := d.plans.LoadOrStore(typ, p)
	return got.(*nodePlan)
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
	return pseudonym(hmac.New(sha256.New, key), typ, id)
}

// pseudonym is Pseudonym with the key's HMAC already set up.
func pseudonym(mac hash.Hash, typ, id string) string {
	mac.Reset()
	mac.Write([]byte("id\x00" + typ + "/" + id))
	var sum [sha256.Size]byte
	return hex.EncodeToString(mac.Sum(sum[:0])[:16])
}

// ShiftDays is the date shift of one patient under key: whole days back,
// between 1 and max, so intervals and times of day are kept.
func ShiftDays(key []byte, patient string, max int) int {
	return shiftDays(hmac.New(sha256.New, key), patient, max)
}

// shiftDays is ShiftDays with the key's HMAC already set up.
func shiftDays(mac hash.Hash, patient string, max int) int {
	mac.Reset()
	mac.Write([]byte("shift\x00" + patient))
	var sum [sha256.Size]byte
	return -int(binary.BigEndian.Uint64(mac.Sum(sum[:0])[:8])%uint64(max)) - 1
}

// Apply de-identifies res in place under the project key and returns it.
func (d *Deidentifier) Apply(res map[string]any, key []byte) (map[string]any, Result, error) {
	r := d.newRun(res, key)
	defer d.release(r)
	r.shift = shiftDays(r.mac, patientOf(res), d.maxShift)
	r.index(res, r.typ)
	for i := range d.rules {
		if err := r.apply(&d.rules[i]); err != nil {
			return nil, Result{}, fmt.Errorf("deid rule at line %d (%s): %w", d.rules[i].line, d.rules[i].spec.Path, err)
		}
	}
	cleanup(res)
	r.label()
	return res, r.result, nil
}

// newRun takes a run from the pool (its maps and selections empty, its
// HMAC kept when the key is the same) and sets it up for res.
func (d *Deidentifier) newRun(res map[string]any, key []byte) *run {
	r, _ := d.runs.Get().(*run)
	if r == nil {
		r = &run{d: d, labels: map[string]bool{}, decidedMap: map[uintptr]bool{}, decidedField: map[fieldKey]bool{},
			parent: map[uintptr]fieldKey{}, objects: make([][]typed, len(d.rules)), props: make([][]fieldKeyed, len(d.rules))}
	}
	if r.mac == nil || !bytes.Equal(r.key, key) {
		r.key, r.mac = bytes.Clone(key), hmac.New(sha256.New, key)
	}
	r.typ, _ = res["resourceType"].(string)
	r.res, r.shift = res, 0
	r.result = Result{Pseudonyms: map[string]string{}}
	return r
}

// release empties r (dropping every reference into the resource) and
// returns it to the pool.
func (d *Deidentifier) release(r *run) {
	clear(r.labels)
	clear(r.decidedMap)
	clear(r.decidedField)
	clear(r.parent)
	for i := range r.objects {
		clear(r.objects[i])
		r.objects[i] = r.objects[i][:0]
	}
	for i := range r.props {
		clear(r.props[i])
		r.props[i] = r.props[i][:0]
	}
	r.res, r.result = nil, Result{}
	d.runs.Put(r)
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

type run struct {
	d      *Deidentifier
	key    []byte
	mac    hash.Hash // HMAC-SHA256 under key, reset before each use
	typ    string
	res    map[string]any
	shift  int
	labels map[string]bool
	result Result

	decidedMap   map[uintptr]bool
	decidedField map[fieldKey]bool
	parent       map[uintptr]fieldKey
	// objects and props are, per rule of the descendants().ofType(T) form,
	// the nodes it selects in walk order: the objects of a type derived
	// from T (their member is found when the rule runs) and the
	// properties of primitive type T.
	objects [][]typed
	props   [][]fieldKeyed
}

// index walks the resource with the R4 model, recording each complex
// node's type and parent and each property's type.
func (r *run) index(m map[string]any, typ string) {
	for _, i := range r.d.plan(typ).objects {
		r.objects[i] = append(r.objects[i], typed{m, typ})
	}
	for k, v := range m {
		if k == "resourceType" || strings.HasPrefix(k, "_") {
			continue
		}
		_, pt, _, ok := r.d.model.Property(typ, k)
		if !ok {
			continue
		}
		for _, i := range r.d.plan(pt).fields {
			r.props[i] = append(r.props[i], fieldKeyed{m, k})
		}
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
	i := ru.index
	switch {
	case ru.fastType != "":
		if ru.member == "" && r.d.model.IsPrimitive(ru.fastType) {
			fields = r.props[i]
			break
		}
		for _, t := range r.objects[i] {
			if ru.member == "" {
				maps = append(maps, t.m)
				continue
			}
			fields = append(fields, r.memberKeys(t.m, t.typ, ru.member)...)
		}
	case ru.parent != nil:
		parents, ok := r.navigate(ru)
		if !ok {
			nodes, err := ru.parent.Evaluate(r.res)
			if err != nil {
				return err
			}
			parents = parents[:0]
			for _, n := range nodes {
				if m, ok := n.Value().(map[string]any); ok {
					parents = append(parents, typed{m, n.Type()})
				}
			}
		}
		for _, p := range parents {
			fields = append(fields, r.memberKeys(p.m, p.typ, ru.member)...)
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

// navigate answers a rule's parent path of the simple form Type.a.b (no
// functions, no choice elements) by walking the JSON as the FHIRPath
// engine would, without evaluating it: the leading type selects the
// resource when it is of that type, each step its child objects typed by
// the model (TestNavigateMatchesEvaluator holds the two to the same
// answer). ok is false when the path or the data needs the evaluator.
func (r *run) navigate(ru *rule) (_ []typed, ok bool) {
	if ru.lead == "" {
		return nil, false
	}
	if r.typ == "" || !r.d.model.IsA(r.typ, ru.lead) {
		return nil, true
	}
	cur := []typed{{r.res, r.typ}}
	for _, step := range ru.steps {
		var next []typed
		for _, t := range cur {
			types, _, choice, ok := r.d.model.Element(t.typ, step)
			if !ok || choice {
				return nil, false
			}
			each(t.m[step], func(x any) {
				cm, isMap := x.(map[string]any)
				if !isMap {
					return
				}
				ct := types[0]
				if rt, ok := cm["resourceType"].(string); ok && (ct == "" || ct == "Resource" || ct == "DomainResource") {
					ct = rt
				}
				next = append(next, typed{cm, ct})
			})
		}
		cur = next
	}
	return cur, true
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
