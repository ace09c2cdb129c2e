package resources

import (
	"embed"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

//go:embed data/search-parameters.json data/server-search-parameters.json data/compartments.json
var dataFS embed.FS

// ServerParamBase is the canonical base of the search parameters Anodyne
// defines itself (data/server-search-parameters.json): ones R4 core lacks,
// such as Flag status.
const ServerParamBase = "http://anodyne-fhir.org/fhir/SearchParameter/"

// Param is one search parameter as it applies to one resource type.
// Params are immutable once registered; the registry replaces them whole.
type Param struct {
	Code string
	// Type is the storage kind; zero for types without stored values (special).
	Type storage.Kind
	// TypeName is the SearchParameter.type as written ("token", "special", …).
	TypeName string
	URL      string
	// Base lists the resource types of the definition.
	Base []string
	// Expression is the FHIRPath for this resource type: the definition's
	// union filtered to the parts that start with this type (Resource.x
	// rewritten to Type.x), so that one evaluation does only this type's work.
	Expression string
	// Targets are the resource types a reference parameter may point to.
	Targets []string
	// Components are the parts of a composite parameter, in definition order.
	Components []Component
	// Modifiers are those accepted by Compile for this parameter (without ":").
	Modifiers []string
	// Custom marks a parameter added at runtime with Add.
	Custom bool

	compiled evaluator
	// atRoot marks a composite whose expression for this type has a
	// branch that is the resource itself ("Observation"): its combinations
	// at the root may be left to the components' own entries (see
	// rootImplied in composite.go).
	atRoot bool
}

// Component is one part of a composite parameter.
type Component struct {
	Definition string // URL of the component's own SearchParameter
	Expression string // FHIRPath relative to each node of the composite's expression
	Type       storage.Kind
	param      *Param // the resolved definition (for its targets etc.)
	compiled   evaluator
}

// Registry holds the search parameters and compartment definitions. It is
// safe for concurrent use; Add may run while searches and writes use it.
type Registry struct {
	mu sync.RWMutex
	// byType maps resource type -> code -> param.
	byType map[string]map[string]*Param
	// sorted caches byType's params per type ordered by code; a slice is
	// never modified once stored (replaced whole), so readers may keep it.
	sorted map[string][]*Param
	// byURL maps a definition's canonical URL to its param as defined (full
	// expression, all bases).
	byURL map[string]*Param
	// common holds definitions whose base is Resource or DomainResource; they
	// are instantiated for every type the registry knows.
	common []*Param
	// compartments maps compartment type -> resource type -> param codes.
	compartments map[string]map[string][]string
	// unsupported lists definitions that were skipped, with the reason.
	unsupported map[string]string
	// server holds the server-defined definitions as loaded (never changed).
	server []ServerParam

	baseURL string
	now     func() time.Time
	log     *slog.Logger
}

// Option configures a Registry.
type Option func(*Registry)

// WithBaseURL sets this server's base URL ("https://fhir.example.org/r4").
// Absolute references under it are indexed and searched as relative ones.
func WithBaseURL(u string) Option {
	return func(r *Registry) { r.baseURL = strings.TrimRight(u, "/") }
}

// WithClock sets the clock used by the date prefix "ap" (approximately).
func WithClock(now func() time.Time) Option {
	return func(r *Registry) { r.now = now }
}

// WithLogger sets the logger for load-time notices (skipped parameters).
func WithLogger(l *slog.Logger) Option {
	return func(r *Registry) { r.log = l }
}

// Load builds a registry from the embedded official R4 definitions and
// then the server-defined ones (data/server-search-parameters.json).
// Official parameters of unsupported types are recorded (Unsupported),
// logged once and skipped; only a broken embedded file (including a
// server-defined parameter that cannot be served) is an error.
func Load(opts ...Option) (*Registry, error) {
	r := &Registry{
		byType:       map[string]map[string]*Param{},
		sorted:       map[string][]*Param{},
		byURL:        map[string]*Param{},
		compartments: map[string]map[string][]string{},
		unsupported:  map[string]string{},
		now:          time.Now,
		log:          slog.Default(),
	}
	for _, o := range opts {
		o(r)
	}
	var defs []map[string]any
	if err := readEmbedded("data/search-parameters.json", &defs); err != nil {
		return nil, err
	}
	var comps []struct {
		Code     string `json:"code"`
		Resource []struct {
			Code  string   `json:"code"`
			Param []string `json:"param"`
		} `json:"resource"`
	}
	if err := readEmbedded("data/compartments.json", &comps); err != nil {
		return nil, err
	}
	// Every type named by a compartment definition is a resource type; with
	// the bases of the parameters this covers all R4 types.
	for _, c := range comps {
		m := map[string][]string{}
		for _, res := range c.Resource {
			r.ensureType(res.Code)
			var codes []string
			for _, p := range res.Param {
				// "{def}" marks the compartment's own type: the focal
				// resource itself, which the caller adds by id.
				if p != "{def}" {
					codes = append(codes, p)
				}
			}
			if len(codes) > 0 {
				m[res.Code] = codes
			}
		}
		r.compartments[c.Code] = m
	}

	var skipped []string
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range defs {
		p, err := parseDefinition(d)
		if err != nil {
			return nil, fmt.Errorf("load search parameter %v: %w", d["url"], err)
		}
		if reason := p.unsupportedReason(); reason != "" {
			r.unsupported[p.URL] = reason
			skipped = append(skipped, p.Code)
			continue
		}
		if err := r.addLocked(p); err != nil {
			// An official expression the engine cannot parse is a gap in
			// the engine, not a reason to refuse to start.
			r.unsupported[p.URL] = err.Error()
			skipped = append(skipped, p.Code)
		}
	}
	if err := r.resolveComponentsLocked(); err != nil {
		return nil, err
	}
	var server []map[string]any
	if err := readEmbedded("data/server-search-parameters.json", &server); err != nil {
		return nil, err
	}
	if err := r.addServerParamsLocked(server); err != nil {
		return nil, err
	}
	if len(skipped) > 0 {
		r.log.Info("search parameters skipped", "count", len(skipped), "codes", strings.Join(skipped, ","))
	}
	return r, nil
}

// ServerParam is one server-defined SearchParameter as shipped: its id,
// its version (an integer that grows when the definition changes, so that
// stored resources are reindexed for it) and the definition itself.
type ServerParam struct {
	ID         string
	Version    int64
	Definition map[string]any
}

// ServerParams lists the server-defined parameters (the caller must not
// change the definitions).
func (r *Registry) ServerParams() []ServerParam { return slices.Clone(r.server) }

// addServerParamsLocked registers the server-defined parameters. Each
// must have its canonical under ServerParamBase and a code no official
// parameter of its bases has: they add to R4, never replace it.
func (r *Registry) addServerParamsLocked(defs []map[string]any) error {
	for _, d := range defs {
		p, err := parseDefinition(d)
		if err != nil {
			return fmt.Errorf("server search parameter %v: %w", d["url"], err)
		}
		if !strings.HasPrefix(p.URL, ServerParamBase) {
			return fmt.Errorf("server search parameter %s: its url must start with %s", p.URL, ServerParamBase)
		}
		if reason := p.unsupportedReason(); reason != "" {
			return fmt.Errorf("server search parameter %s: %s", p.URL, reason)
		}
		for _, b := range p.Base {
			if isGenericBase(b) {
				return fmt.Errorf("server search parameter %s: base %s would apply it to every type", p.URL, b)
			}
			if have, ok := r.byType[b][p.Code]; ok {
				return fmt.Errorf("server search parameter %s: %s %s is already defined by %s", p.URL, b, p.Code, have.URL)
			}
		}
		id, _ := d["id"].(string)
		vs, _ := d["version"].(string)
		v, err := strconv.ParseInt(vs, 10, 64)
		if id == "" || err != nil || v < 1 {
			return fmt.Errorf("server search parameter %s: needs an id and a version that is a positive integer (%q)", p.URL, vs)
		}
		if err := r.addLocked(p); err != nil {
			return fmt.Errorf("server search parameter %s: %w", p.URL, err)
		}
		r.server = append(r.server, ServerParam{ID: id, Version: v, Definition: d})
	}
	return nil
}

func readEmbedded(name string, v any) error {
	b, err := dataFS.ReadFile(name)
	if err != nil {
		return fmt.Errorf("read embedded %s: %w", name, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode embedded %s: %w", name, err)
	}
	return nil
}

func (r *Registry) ensureType(t string) {
	if _, ok := r.byType[t]; !ok {
		r.byType[t] = map[string]*Param{}
	}
}

// kinds maps SearchParameter.type to the storage kind.
var kinds = map[string]storage.Kind{
	"string": storage.KindString, "token": storage.KindToken, "reference": storage.KindReference,
	"date": storage.KindDate, "number": storage.KindNumber, "quantity": storage.KindQuantity,
	"uri": storage.KindURI, "composite": storage.KindComposite,
}

// modifiers lists the modifiers Compile implements per type (the
// CapabilityStatement may publish them); reference parameters also accept
// their target types (":Patient"). :above/:below on tokens and references
// (subsumption, hierarchies) are valid FHIR but not implemented: Compile
// answers ErrUnsupported for them.
var modifiers = map[storage.Kind][]string{
	storage.KindString:    {"missing", "exact", "contains"},
	storage.KindToken:     {"missing", "not", "text", "of-type", "in", "not-in"},
	storage.KindReference: {"missing", "identifier"},
	storage.KindDate:      {"missing"},
	storage.KindNumber:    {"missing"},
	storage.KindQuantity:  {"missing"},
	storage.KindURI:       {"missing", "above", "below"},
	storage.KindComposite: {"missing"},
}

// parseDefinition reads a SearchParameter resource into a Param carrying the
// full definition (not yet specialised to one type).
func parseDefinition(sp map[string]any) (*Param, error) {
	if rt, _ := sp["resourceType"].(string); rt != "SearchParameter" {
		return nil, invalid("resourceType is %q, want SearchParameter", rt)
	}
	p := &Param{}
	p.URL, _ = sp["url"].(string)
	p.Code, _ = sp["code"].(string)
	p.TypeName, _ = sp["type"].(string)
	p.Expression, _ = sp["expression"].(string)
	p.Base = stringList(sp["base"])
	p.Targets = stringList(sp["target"])
	if p.Code == "" || p.TypeName == "" || len(p.Base) == 0 {
		return nil, invalid("SearchParameter needs code, type and base")
	}
	p.Type = kinds[p.TypeName]
	if comps, ok := sp["component"].([]any); ok {
		for _, c := range comps {
			cm, _ := c.(map[string]any)
			def, _ := cm["definition"].(string)
			expr, _ := cm["expression"].(string)
			if def == "" || expr == "" {
				return nil, invalid("composite %s: component needs definition and expression", p.Code)
			}
			p.Components = append(p.Components, Component{Definition: def, Expression: expr})
		}
	}
	if p.Type == storage.KindComposite && len(p.Components) == 0 {
		return nil, invalid("composite %s has no components", p.Code)
	}
	p.Modifiers = slices.Clone(modifiers[p.Type])
	if p.Type == storage.KindReference {
		p.Modifiers = append(p.Modifiers, p.Targets...)
	}
	return p, nil
}

func (p *Param) unsupportedReason() string {
	switch {
	case p.Type == 0:
		return "type " + p.TypeName + " has no stored values"
	case p.Expression == "":
		return "no FHIRPath expression"
	}
	return ""
}

func stringList(v any) []string {
	arr, _ := v.([]any)
	out := make([]string, 0, len(arr))
	for _, x := range arr {
		if s, ok := x.(string); ok && s != "" {
			out = append(out, s)
		}
	}
	return out
}

func isGenericBase(b string) bool { return b == "Resource" || b == "DomainResource" }

// addLocked registers a definition for each of its bases. The definition is
// checked first so that a failure leaves the registry unchanged.
func (r *Registry) addLocked(def *Param) error {
	type inst struct {
		typ string
		p   *Param
	}
	var out []inst
	add := func(typ string) error {
		p, err := def.forType(typ)
		if err != nil {
			return err
		}
		if p != nil {
			out = append(out, inst{typ, p})
		}
		return nil
	}
	generic := false
	for _, b := range def.Base {
		if isGenericBase(b) {
			generic = true
			for t := range r.byType {
				if err := add(t); err != nil {
					return err
				}
			}
			continue
		}
		if err := add(b); err != nil {
			return err
		}
	}
	if len(out) == 0 && !generic {
		return fmt.Errorf("%s: expression %q has no part for its bases: %w", def.Code, def.Expression, ErrInvalidValue)
	}
	// The full definition is parsed too: it validates custom parameters
	// whose expression does not start with a type name.
	full, err := compileExpr(def.Expression)
	if err != nil {
		return fmt.Errorf("%s: %w", def.Code, err)
	}
	def.compiled = full
	for i := range def.Components {
		c := &def.Components[i]
		if c.compiled, err = compileExpr(c.Expression); err != nil {
			return fmt.Errorf("%s component %s: %w", def.Code, c.Definition, err)
		}
	}
	for _, x := range out {
		x.p.Components = def.Components
		if _, known := r.byType[x.typ]; !known {
			r.ensureType(x.typ)
			// A type first named by a custom parameter still gets _id,
			// _lastUpdated and the other Resource parameters.
			for _, c := range r.common {
				if cp, err := c.forType(x.typ); err == nil && cp != nil {
					r.byType[x.typ][c.Code] = cp
				}
			}
		}
		r.byType[x.typ][def.Code] = x.p
	}
	clear(r.sorted)
	if generic {
		r.common = slices.DeleteFunc(r.common, func(c *Param) bool { return c.Code == def.Code })
		r.common = append(r.common, def)
	}
	if def.URL != "" {
		r.byURL[def.URL] = def
	}
	return nil
}

// forType specialises a definition to one resource type: only the union
// parts that apply to it, parsed once. It returns nil when no part applies.
func (def *Param) forType(typ string) (*Param, error) {
	expr := typeExpression(def.Expression, typ)
	if expr == "" {
		return nil, nil
	}
	c, err := compileExpr(expr)
	if err != nil {
		return nil, fmt.Errorf("%s on %s: %w", def.Code, typ, err)
	}
	p := *def
	p.Expression = expr
	p.compiled = c
	if def.Type == storage.KindComposite {
		for _, part := range splitTopLevel(expr) {
			if strings.TrimSpace(part) == typ {
				p.atRoot = true
			}
		}
	}
	return &p, nil
}

// typeExpression keeps the top-level "|" parts of expr that apply to typ:
// those starting with typ, or with Resource/DomainResource (rewritten to typ,
// so the engine need not know the type hierarchy), or with no type name at
// all (custom parameters written relative to the resource).
func typeExpression(expr, typ string) string {
	var kept []string
	for _, part := range splitTopLevel(expr) {
		part = strings.TrimSpace(part)
		lead := len(part) - len(strings.TrimLeft(part, "("))
		head := part[lead:]
		name := head
		if i := strings.IndexAny(head, ". )"); i >= 0 {
			name = head[:i]
		}
		switch {
		case name == typ:
			kept = append(kept, part)
		case isGenericBase(name):
			kept = append(kept, part[:lead]+typ+head[len(name):])
		case name == "" || !(name[0] >= 'A' && name[0] <= 'Z'):
			kept = append(kept, part)
		}
	}
	return strings.Join(kept, " | ")
}

// splitTopLevel splits a FHIRPath union at "|" outside parentheses and
// string literals.
func splitTopLevel(expr string) []string {
	var parts []string
	depth, start := 0, 0
	inStr := false
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		switch {
		case inStr:
			if c == '\\' {
				i++
			} else if c == '\'' {
				inStr = false
			}
		case c == '\'':
			inStr = true
		case c == '(' || c == '[':
			depth++
		case c == ')' || c == ']':
			depth--
		case c == '|' && depth == 0:
			parts = append(parts, expr[start:i])
			start = i + 1
		}
	}
	return append(parts, expr[start:])
}

// resolveComponentsLocked gives every composite component the kind of the
// parameter it refers to.
func (r *Registry) resolveComponentsLocked() error {
	for url, def := range r.byURL {
		for i := range def.Components {
			c := &def.Components[i]
			if c.param != nil {
				continue
			}
			cp, ok := r.byURL[c.Definition]
			if !ok || cp.Type == storage.KindComposite || cp.Type == 0 {
				r.log.Info("composite search parameter skipped: component unresolved", "url", url, "component", c.Definition)
				r.removeLocked(def)
				r.unsupported[url] = "component " + c.Definition + " unresolved"
				break
			}
			c.param, c.Type = cp, cp.Type
		}
	}
	return nil
}

func (r *Registry) removeLocked(def *Param) {
	clear(r.sorted)
	delete(r.byURL, def.URL)
	for _, m := range r.byType {
		if p, ok := m[def.Code]; ok && p.URL == def.URL {
			delete(m, def.Code)
		}
	}
}

// Add registers a SearchParameter resource (created over the REST API) so
// that it becomes searchable; later writes index it. It replaces a parameter
// with the same code on the same base. The expression must parse.
func (r *Registry) Add(sp map[string]any) error {
	def, err := parseDefinition(sp)
	if err != nil {
		return fmt.Errorf("add search parameter: %w", err)
	}
	if reason := def.unsupportedReason(); reason != "" {
		return fmt.Errorf("add search parameter %s: %s: %w", def.Code, reason, ErrUnsupported)
	}
	def.Custom = true
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range def.Components {
		c := &def.Components[i]
		cp, ok := r.byURL[c.Definition]
		if !ok || cp.Type == storage.KindComposite || cp.Type == 0 {
			return fmt.Errorf("add search parameter %s: component %s is not a known parameter: %w", def.Code, c.Definition, ErrInvalidValue)
		}
		c.param, c.Type = cp, cp.Type
	}
	if err := r.addLocked(def); err != nil {
		return fmt.Errorf("add search parameter %s: %w: %w", def.Code, ErrInvalidValue, err)
	}
	return nil
}

// Params lists the parameters of a resource type, sorted by code.
func (r *Registry) Params(resourceType string) []*Param {
	return slices.Clone(r.params(resourceType))
}

// params returns the shared sorted list (read only), building it on first use.
func (r *Registry) params(resourceType string) []*Param {
	r.mu.RLock()
	list, ok := r.sorted[resourceType]
	r.mu.RUnlock()
	if ok {
		return list
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if list, ok := r.sorted[resourceType]; ok {
		return list
	}
	m := r.byType[resourceType]
	list = make([]*Param, 0, len(m))
	for _, p := range m {
		list = append(list, p)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Code < list[j].Code })
	if m != nil {
		r.sorted[resourceType] = list
	}
	return list
}

// Param returns one parameter of a resource type by code.
func (r *Registry) Param(resourceType, code string) (*Param, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	p, ok := r.byType[resourceType][code]
	return p, ok
}

// ParamByURL returns a definition by its canonical URL (all bases, full
// expression).
func (r *Registry) ParamByURL(url string) (*Param, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	p, ok := r.byURL[url]
	return p, ok
}

// ResourceTypes lists the types the registry knows, sorted.
func (r *Registry) ResourceTypes() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.byType))
	for t := range r.byType {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Compartment returns the codes of the parameters that put a resource of
// resourceType into a compartment of compartmentType (Patient, Encounter,
// Practitioner, RelatedPerson, Device). Empty when the type is not in that
// compartment. The compartment's own type lists only its linking parameters
// ("link" for Patient); the focal resource itself is in its compartment by id.
func (r *Registry) Compartment(compartmentType, resourceType string) []string {
	return slices.Clone(r.compartments[compartmentType][resourceType])
}

// Unsupported reports the definitions skipped at load: URL -> reason.
func (r *Registry) Unsupported() map[string]string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make(map[string]string, len(r.unsupported))
	for k, v := range r.unsupported {
		out[k] = v
	}
	return out
}

// Partitioning is the patient partitioning of every type (see
// storage.Partitioning). Its links are the reference parameters of the
// Patient CompartmentDefinition and, because searches name the patient
// through them more than through the compartment's own ("Observation?
// patient=" rather than "subject="), every other reference parameter whose
// one target type is Patient. Extra links only ever move a resource to the
// shared partition; Key and Targets read the same list, so they agree.
// Only the R4 core parameters count: a SearchParameter added at run time
// would change the list between restarts, and with it the partition of
// data already stored.
func (r *Registry) Partitioning() storage.Partitioning {
	p := storage.Partitioning{Links: map[string][]storage.PartitionLink{}}
	for _, typ := range r.ResourceTypes() {
		if typ == "Patient" {
			continue
		}
		compartment := r.Compartment("Patient", typ)
		for _, param := range r.Params(typ) {
			if param.Type != storage.KindReference || !strings.HasPrefix(param.URL, "http://hl7.org/fhir/SearchParameter/") {
				continue
			}
			only := onlyPatient(param)
			if only || slices.Contains(compartment, param.Code) {
				p.Links[typ] = append(p.Links[typ], storage.PartitionLink{Param: param.Code, OnlyPatient: only})
			}
		}
	}
	return p
}

// onlyPatient reports whether a reference parameter indexes nothing but
// Patient references: its one target is Patient, or every branch of its
// expression keeps only references that resolve to a Patient (the shared
// "patient" parameters, declared with targets Patient and Group).
func onlyPatient(p *Param) bool {
	if len(p.Targets) == 1 && p.Targets[0] == "Patient" {
		return true
	}
	if p.Expression == "" {
		return false
	}
	for _, branch := range strings.Split(p.Expression, "|") {
		if !strings.HasSuffix(strings.TrimSpace(branch), ".where(resolve() is Patient)") {
			return false
		}
	}
	return true
}
