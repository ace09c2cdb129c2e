package profile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/conformance/fhirpath"
)

// Issue is a finding, shaped like an OperationOutcome.issue.
type Issue = conformance.Issue

// maxIssues bounds one report, as the structural validator does.
const maxIssues = 200

// maxDepth bounds nesting (contained resources in Bundles in Parameters).
const maxDepth = 64

// Options says what Validate checks.
type Options struct {
	// Profiles are checked in addition to those the resource claims in meta.profile.
	Profiles []string
	// IgnoreClaimed skips the resource's meta.profile (for $validate?profile=).
	IgnoreClaimed bool
	// Fetch, when set, finds definitions the registry does not hold (see WithFetch).
	Fetch Fetcher
	// SkipCore skips the core definition of the resource type (its
	// structure and the core invariants); profiles are still checked in full.
	SkipCore bool
	// Resolve, when set, finds the target of a reference that is neither
	// contained nor in the enclosing Bundle, so that the element's target
	// profiles are checked on it (see Resolver).
	Resolve Resolver
}

// Resolver finds the resource a reference designates outside the
// resource being validated: ref is "Type/id" (optionally with
// /_history/version) or an absolute URL. It returns nil, and no error,
// when it does not hold the target (another server's URL, an unknown id,
// a target the caller may not read); the target profile is then reported
// as not checked, a warning, as the HL7 validator does.
type Resolver func(ctx context.Context, ref string) (map[string]any, error)

// Validate checks a resource (decoded with json.Decoder.UseNumber) against
// its core definition, the profiles it claims and opts.Profiles. A
// profile it cannot find is an error issue naming it (code "not-found").
func (r *Registry) Validate(ctx context.Context, res map[string]any, opts Options) []Issue {
	typ, _ := res["resourceType"].(string)
	if opts.Fetch != nil {
		ctx = WithFetch(ctx, opts.Fetch)
	}
	w := &walker{r: r, ctx: ctx, issues: new([]Issue), seen: map[string]bool{}, resolver: opts.Resolve}
	if typ == "" {
		w.add("error", "structure", typ, "", "the resource has no resourceType")
		return *w.issues
	}
	if !opts.SkipCore {
		sd, err := r.Definition(ctx, coreURL(typ))
		if err != nil {
			w.add("error", "not-supported", typ, "", fmt.Sprintf("%s is not an R4 resource type", typ))
			return *w.issues
		}
		w.resourceAgainst(res, typ, sd, typ, true)
	}
	if typ == "StructureDefinition" && !conformance.HasErrors(*w.issues) {
		// A definition is valid only if it can be used: its snapshot can
		// be generated from its differential and compiled.
		if err := r.Check(ctx, res); err != nil {
			w.add("error", "processing", typ, "", "the StructureDefinition cannot be used: "+err.Error())
		}
	}
	var urls []string
	if !opts.IgnoreClaimed {
		urls = append(urls, claimedProfiles(res)...)
	}
	urls = append(urls, opts.Profiles...)
	seen := map[string]bool{}
	for _, url := range urls {
		if seen[url] {
			continue
		}
		seen[url] = true
		w.profile(res, typ, url, typ)
	}
	return *w.issues
}

// ConformsTo reports whether res meets the profile with no error: the
// FHIRPath conformsTo() function.
func (r *Registry) ConformsTo(ctx context.Context, res any, url string) (bool, error) {
	m, ok := res.(map[string]any)
	if !ok {
		return false, nil
	}
	sd, err := r.Definition(ctx, url)
	if err != nil {
		return false, err
	}
	typ, _ := m["resourceType"].(string)
	w := &walker{r: r, ctx: ctx, issues: new([]Issue)}
	w.resourceAgainst(m, typ, sd, typ, false)
	return !conformance.HasErrors(*w.issues), nil
}

func claimedProfiles(res map[string]any) []string {
	meta, _ := res["meta"].(map[string]any)
	return strings1(meta["profile"])
}

type walker struct {
	r      *Registry
	ctx    context.Context
	issues *[]Issue
	sd     *StructureDef // the definition being applied, for messages
	res    any           // %resource
	root   any           // %rootResource
	depth  int
	seen   map[string]bool // findings reported, shared by the walkers of one Validate
	owner  owner           // the object whose children are being validated
	// contained is set while validating a resource inside "contained".
	inContained bool
	// container is the resource whose contained list #id references
	// resolve in; bundle and fullURL are the enclosing Bundle and the
	// fullUrl of the entry being validated (see resolve.go).
	container map[string]any
	bundle    *bundleScope
	fullURL   string
	// resolver finds targets outside the resource (nil: not checked). A
	// target's own references are not followed (ConformsTo has none).
	resolver Resolver
}

func (w *walker) add(sev, code, path, rule, msg string) {
	if len(*w.issues) >= maxIssues {
		return
	}
	if len(*w.issues) == maxIssues-1 {
		*w.issues = append(*w.issues, Issue{Severity: "information", Code: "too-costly", Diagnostics: "further issues were not reported"})
		return
	}
	if w.seen != nil {
		// A profile's snapshot repeats the core rules: report each finding once.
		key := sev + "|" + code + "|" + path + "|" + rule + "|" + msg
		if w.seen[key] {
			return
		}
		w.seen[key] = true
	}
	d := msg
	if w.sd != nil && !w.r.IsCore(w.sd.URL) || rule != "" {
		var parts []string
		if rule != "" {
			parts = append(parts, rule)
		}
		if w.sd != nil {
			parts = append(parts, "profile "+w.sd.URL)
		}
		d += " (" + strings.Join(parts, "; ") + ")"
	}
	*w.issues = append(*w.issues, Issue{Severity: sev, Code: code, Diagnostics: d, Expression: path})
}

// profile validates res against the profile url.
func (w *walker) profile(res map[string]any, typ, url, path string) {
	sd, err := w.r.Definition(w.ctx, url)
	if err != nil {
		if errors.Is(err, ErrUnknownProfile) {
			w.add("error", "not-found", path, "", "unknown profile "+url)
		} else {
			w.add("error", "processing", path, "", fmt.Sprintf("profile %s cannot be used: %v", url, err))
		}
		return
	}
	if sd.Type != typ {
		w.add("error", "invalid", path, "", fmt.Sprintf("profile %s is for %s, not %s", url, sd.Type, typ))
		return
	}
	w.resourceAgainst(res, typ, sd, path, false)
}

// resourceAgainst validates a resource against one definition of its type,
// as a new %resource. nested says whether contained and inner resources
// also get their claimed profiles checked.
func (w *walker) resourceAgainst(res map[string]any, typ string, sd *StructureDef, path string, nested bool) {
	if w.depth > maxDepth {
		w.add("error", "too-costly", path, "", "resources are nested too deeply")
		return
	}
	sub := *w
	sub.sd, sub.res, sub.depth = sd, res, w.depth+1
	if sub.root == nil {
		sub.root = res
	}
	if !sub.inContained {
		sub.container = res
	}
	if typ == "Bundle" {
		sub.bundle, sub.fullURL = newBundleScope(res), ""
		if nested {
			sub.fullURLs(path)
		}
	}
	sub.node(item{val: res, typ: typ, path: path}, sd.Root, nested)
}

// owner is the element an extension sits on, for the extension's context.
type owner struct{ elemPath, instPath, typ string }

// item is one value of an element in the instance.
type item struct {
	val  any            // JSON value; nil for a primitive with only extensions
	ext  map[string]any // the "_name" part of a primitive
	typ  string         // FHIR type
	path string
}

// node validates one value against one element definition.
func (w *walker) node(it item, e *Element, nested bool) {
	if e.Fixed != nil && !equalJSON(it.val, e.Fixed) {
		w.add("error", "value", it.path, "fixed value "+e.FixedKey, fmt.Sprintf("the value must be %s, found %s", jsonText(e.Fixed), jsonText(it.val)))
	}
	if e.Pattern != nil && !matchesPattern(it.val, e.Pattern) {
		w.add("error", "value", it.path, "pattern "+e.PatternKey, fmt.Sprintf("the value must match %s, found %s", jsonText(e.Pattern), jsonText(it.val)))
	}
	if e.Binding != nil {
		w.binding(it, e)
	}
	if e.MaxLength > 0 {
		if s, ok := it.val.(string); ok && len([]rune(s)) > e.MaxLength {
			w.add("error", "value", it.path, "maxLength", fmt.Sprintf("the value is longer than %d characters", e.MaxLength))
		}
	}
	obj, isObj := it.val.(map[string]any)
	var typeDef *StructureDef
	switch {
	case !isObj || e == w.sd.Root:
		// Primitives and the resource root: the element's own rules only.
	case obj["resourceType"] != nil && isResourceElement(e):
		rt, _ := obj["resourceType"].(string)
		w.innerResource(obj, rt, it.path, nested)
		w.constraints(it, e, nil)
		return
	default:
		typeDef = w.typeDefinition(it, e)
	}
	var typeRoot *Element
	if typeDef != nil {
		typeRoot = typeDef.Root
	}
	w.constraints(it, e, typeRoot)
	if !isObj {
		if it.ext != nil {
			w.primitiveExtensions(it, e)
		}
		return
	}
	if it.typ == "Reference" {
		w.reference(obj, e, it.path)
	}
	children := e.Children
	if len(children) == 0 && e.ContentRef != "" {
		if target := w.sd.elementByID(strings.TrimPrefix(e.ContentRef, "#")); target != nil {
			children = target.Children
		}
	}
	cw := *w
	cw.owner = owner{elemPath: e.Path, instPath: it.path, typ: w.nodeType(it, e)}
	if len(children) == 0 && typeRoot != nil {
		children = typeRoot.Children
		if typeDef != w.sd {
			cw.sd = typeDef
		}
	}
	cw.children(obj, children, it.path, nested)
}

func isResourceElement(e *Element) bool {
	for _, t := range e.Types {
		if t.Code == "Resource" || t.Code == "DomainResource" {
			return true
		}
	}
	return e.Path == "Bundle.entry.resource" || strings.HasSuffix(e.Path, ".contained")
}

// innerResource validates a contained or entry resource against its core
// definition (and, inside Bundles and Parameters, its claimed profiles).
func (w *walker) innerResource(res map[string]any, typ, path string, nested bool) {
	sd, err := w.r.Definition(w.ctx, coreURL(typ))
	if err != nil {
		w.add("error", "structure", path, "", fmt.Sprintf("%s is not an R4 resource type", typ))
		return
	}
	sub := *w
	if w.bundle != nil {
		if u, ok := w.bundle.fullURLOf(res); ok {
			sub.fullURL = u
		}
	}
	sub.inContained = strings.HasSuffix(strings.TrimSuffix(path, "]"), "contained") || strings.Contains(path[strings.LastIndexByte(path, '.')+1:], "contained[")
	if !nested {
		// Only the profile's own rules apply when checking a profile.
		return
	}
	if !sub.inContained {
		// A Bundle entry (or a Parameters resource) is a resource of its
		// own: %rootResource is itself, not the Bundle (ref-1 looks for
		// #id among its contained).
		sub.root = nil
	}
	sub.resourceAgainst(res, typ, sd, path, nested)
	for _, url := range claimedProfiles(res) {
		if _, err := w.r.Definition(w.ctx, url); err != nil {
			w.add("warning", "not-found", path, "", "the claimed profile "+url+" is not known")
			continue
		}
		sub.profile(res, typ, url, path)
	}
}

// typeDefinition is the definition whose root applies to a complex value:
// an extension's own definition, a type profile, or the core type.
func (w *walker) typeDefinition(it item, e *Element) *StructureDef {
	typ := it.typ
	if typ == "" || typ == "BackboneElement" || typ == "Element" || strings.Contains(typ, ".") {
		return nil
	}
	if typ == "Extension" && len(e.Children) == 0 {
		if obj, ok := it.val.(map[string]any); ok {
			if url, _ := obj["url"].(string); url != "" {
				if sd, err := w.r.Definition(w.ctx, url); err == nil && sd.Type == "Extension" {
					w.extensionContext(sd, it.path)
					return sd
				}
			}
		}
	}
	for _, t := range e.Types {
		if t.Code == typ && len(t.Profiles) == 1 && typ != "Extension" {
			if sd, err := w.r.Definition(w.ctx, t.Profiles[0]); err == nil {
				return sd
			}
		}
	}
	sd, err := w.r.Definition(w.ctx, coreURL(typ))
	if err != nil {
		return nil
	}
	return sd
}

func (sd *StructureDef) elementByID(id string) *Element {
	var find func(e *Element) *Element
	find = func(e *Element) *Element {
		if e.ID == id {
			return e
		}
		for _, c := range e.Children {
			if f := find(c); f != nil {
				return f
			}
		}
		return nil
	}
	return find(sd.Root)
}

// extensionContext checks that an extension is used where its definition
// allows (StructureDefinition.context of type element: an element path
// such as HumanName.family, or a type the owner is or derives from).
func (w *walker) extensionContext(sd *StructureDef, path string) {
	ctxs, _ := sd.JSON["context"].([]any)
	if len(ctxs) == 0 || w.owner.elemPath == "" {
		return
	}
	m, err := fhirpath.R4()
	if err != nil {
		return
	}
	inst := stripIndexes(w.owner.instPath)
	var allowed []string
	for _, c := range ctxs {
		cm, _ := c.(map[string]any)
		expr, _ := cm["expression"].(string)
		if cm["type"] != "element" || expr == "" {
			return // fhirpath and extension contexts are not judged here
		}
		// "Element" is read as anywhere, resources included, as the reference validator does.
		if expr == "Element" || expr == w.owner.elemPath || expr == inst || (w.owner.typ != "" && m.IsA(w.owner.typ, expr)) {
			return
		}
		allowed = append(allowed, expr)
	}
	w.add("error", "structure", path, "extension context", fmt.Sprintf("the extension %s is not allowed on %s (allowed on: %s)", sd.URL, inst, strings.Join(allowed, ", ")))
}

func stripIndexes(p string) string {
	var b strings.Builder
	depth := 0
	for _, r := range p {
		switch {
		case r == '[':
			depth++
		case r == ']':
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// primitiveExtensions validates the extensions of a primitive's "_name" part.
func (w *walker) primitiveExtensions(it item, e *Element) {
	list, _ := it.ext["extension"].([]any)
	pw := *w
	pw.owner = owner{elemPath: e.Path, instPath: it.path, typ: it.typ}
	for i, x := range list {
		pw.node(item{val: x, typ: "Extension", path: fmt.Sprintf("%s.extension[%d]", it.path, i)}, extensionElement, true)
	}
}

// extensionElement stands for an element of type Extension with no constraint of its own.
var extensionElement = &Element{Path: "Extension", Name: "extension", Max: -1, Types: []TypeRef{{Code: "Extension"}}}

// children validates the properties of an object against child elements.
func (w *walker) children(obj map[string]any, elems []*Element, path string, nested bool) {
	type group struct {
		keys  []string
		items []item
	}
	groups := map[*Element]*group{}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parent := &Element{Children: elems}
	for _, key := range keys {
		if key == "resourceType" || key == "fhir_comments" {
			continue
		}
		name := key
		underscore := strings.HasPrefix(key, "_")
		if underscore {
			name = key[1:]
			if _, ok := obj[name]; ok {
				continue // handled with its value
			}
		}
		c, typ := parent.child(name)
		if c == nil {
			w.add("error", "structure", path+"."+name, "", fmt.Sprintf("unknown element %q", name))
			continue
		}
		g := groups[c]
		if g == nil {
			g = &group{}
			groups[c] = g
		}
		g.keys = append(g.keys, name)
		g.items = append(g.items, itemsOf(obj[name], obj["_"+name], typ, path+"."+name)...)
	}
	for _, c := range elems {
		g := groups[c]
		var items []item
		if g != nil {
			items = g.items
			if len(g.keys) > 1 {
				w.add("error", "structure", path+"."+c.Name, "", fmt.Sprintf("only one of %s may be present", strings.Join(g.keys, ", ")))
			}
		}
		w.cardinality(c, len(items), path+"."+strings.TrimSuffix(c.Name, "[x]"), "")
		if len(items) == 0 {
			for _, s := range c.Slices {
				if s.Min > 0 {
					w.cardinality(s, 0, path+"."+strings.TrimSuffix(c.Name, "[x]"), s.SliceName)
				}
			}
			continue
		}
		w.types(c, items)
		if c.Slicing != nil && len(c.Slices) > 0 {
			w.slices(c, c.Slicing, items, nested)
			continue
		}
		for _, it := range items {
			w.node(it, c, nested)
		}
	}
}

func itemsOf(v, ext any, typ, path string) []item {
	list, many := v.([]any)
	extList, extMany := ext.([]any)
	if !many && !extMany {
		em, _ := ext.(map[string]any)
		return []item{{val: v, ext: em, typ: typ, path: path}}
	}
	n := max(len(list), len(extList))
	out := make([]item, n)
	for i := range n {
		out[i] = item{typ: typ, path: fmt.Sprintf("%s[%d]", path, i)}
		if i < len(list) {
			out[i].val = list[i]
		}
		if i < len(extList) {
			out[i].ext, _ = extList[i].(map[string]any)
		}
	}
	return out
}

func (w *walker) cardinality(c *Element, n int, path, slice string) {
	if n >= c.Min && (c.Max < 0 || n <= c.Max) {
		return
	}
	rule := "cardinality " + cardText(c)
	if slice != "" {
		rule = "slice " + slice + ", " + rule
	}
	if n < c.Min {
		w.add("error", "required", path, rule, fmt.Sprintf("minimum required = %d, but only found %d", c.Min, n))
	}
	if c.Max >= 0 && n > c.Max {
		if c.Max == 0 {
			w.add("error", "structure", path, rule, fmt.Sprintf("the element is not allowed here, found %d", n))
		} else {
			w.add("error", "structure", path, rule, fmt.Sprintf("maximum allowed = %d, but found %d", c.Max, n))
		}
	}
}

func cardText(c *Element) string {
	if c.Max < 0 {
		return fmt.Sprintf("%d..*", c.Min)
	}
	return fmt.Sprintf("%d..%d", c.Min, c.Max)
}

// types checks that each item's type is one the element allows.
func (w *walker) types(c *Element, items []item) {
	if len(c.Types) == 0 {
		return
	}
	for _, it := range items {
		if it.typ == "" {
			continue
		}
		ok := false
		for _, t := range c.Types {
			if t.Code == it.typ || t.Code == "*" || strings.HasPrefix(t.Code, "System.") {
				ok = true
				break
			}
		}
		if !ok {
			var allowed []string
			for _, t := range c.Types {
				allowed = append(allowed, t.Code)
			}
			w.add("error", "structure", it.path, "type", fmt.Sprintf("type %s is not allowed here (allowed: %s)", it.typ, strings.Join(allowed, ", ")))
		}
	}
}

// constraints evaluates the invariants of the element and of its type's root.
func (w *walker) constraints(it item, e *Element, typeRoot *Element) {
	if len(e.Constraints) == 0 && (typeRoot == nil || len(typeRoot.Constraints) == 0) {
		return
	}
	var node fhirpath.Node
	built := false
	run := func(c *Constraint, done map[string]bool) {
		if done != nil && done[c.Key] {
			return
		}
		if c.Key == "ele-1" && c.Expression == ele1Expression {
			if !ele1(it) {
				w.add("error", "invariant", it.path, "invariant ele-1", "constraint failed: "+c.Human)
			}
			return
		}
		if !built {
			node = fhirpath.NewNode(it.val, w.nodeType(it, e))
			built = true
		}
		w.constraint(node, it.path, c)
	}
	var done map[string]bool
	if typeRoot != nil && len(e.Constraints) > 0 {
		done = make(map[string]bool, len(e.Constraints))
	}
	for i := range e.Constraints {
		run(&e.Constraints[i], nil)
		if done != nil {
			done[e.Constraints[i].Key] = true
		}
	}
	if typeRoot != nil && typeRoot != e {
		for i := range typeRoot.Constraints {
			run(&typeRoot.Constraints[i], done)
		}
	}
}

// ele1Expression is ele-1, the invariant of every element. It is computed
// directly (ele1) rather than by the FHIRPath engine because it runs on
// every node of every resource; TestEle1MatchesFHIRPath holds the two to
// the same answers.
const ele1Expression = "hasValue() or (children().count() > id.count())"

// ele1 is "hasValue() or (children().count() > id.count())": a primitive
// with a value, or an element with some child other than its id.
func ele1(it item) bool {
	switch v := it.val.(type) {
	case string, bool, json.Number:
		return true
	case map[string]any:
		for k, c := range v {
			if k == "id" || k == "resourceType" {
				continue
			}
			if l, ok := c.([]any); ok && len(l) == 0 {
				continue
			}
			if c != nil {
				return true
			}
		}
		return false
	case nil:
		for k, c := range it.ext {
			if k == "id" {
				continue
			}
			if l, ok := c.([]any); ok && len(l) == 0 {
				continue
			}
			return true
		}
		return false
	}
	return true
}

// nodeType is the FHIRPath type of a value: backbone elements are typed by
// their path in the model ("Observation.component").
func (w *walker) nodeType(it item, e *Element) string {
	if it.typ == "BackboneElement" || it.typ == "Element" || it.typ == "" {
		if m, err := fhirpath.R4(); err == nil && m.HasType(e.Path) {
			return e.Path
		}
	}
	return it.typ
}

func (w *walker) constraint(node fhirpath.Node, path string, c *Constraint) {
	if c.Key == "dom-6" && w.inContained {
		// Narrative is the container's business: contained resources
		// are not expected to carry their own (as the reference validator does).
		return
	}
	sev := "error"
	if c.Severity == "warning" {
		sev = "warning"
	}
	rule := "invariant " + c.Key
	if c.parseErr != nil {
		w.add("warning", "invariant", path, rule, fmt.Sprintf("the invariant cannot be parsed: %v", c.parseErr))
		return
	}
	out, err := c.expr.Evaluate(node,
		fhirpath.WithContext(w.ctx),
		fhirpath.WithEnv("resource", w.res),
		fhirpath.WithEnv("rootResource", w.root),
		fhirpath.WithConformsTo(w.r.ConformsTo),
	)
	if err != nil {
		w.add("warning", "invariant", path, rule, fmt.Sprintf("the invariant could not be evaluated: %v", err))
		return
	}
	if len(out) == 1 {
		if b, ok := out[0].Value().(bool); ok && !b {
			w.add(sev, "invariant", path, rule, "constraint failed: "+c.Human)
		}
	}
}

// reference checks a Reference's target type against the element's
// target profiles. The type comes from the resource the reference resolves
// to when it is local (contained, or an entry of the enclosing Bundle),
// else from its literal (Patient/1, an absolute RESTful URL) or its type
// element. A target profile that is a profile rather than a core type is
// checked on the target: the local one, else the one the Resolver finds;
// a target that cannot be found is a warning that the profile was not
// checked, as the HL7 validator reports it.
func (w *walker) reference(obj map[string]any, e *Element, path string) {
	var targets []string
	for _, t := range e.Types {
		if t.Code == "Reference" {
			targets = append(targets, t.TargetProfiles...)
		}
	}
	ref, _ := obj["reference"].(string)
	local, problem := w.resolve(ref)
	if problem != "" {
		w.add("error", "structure", path, "reference resolution", fmt.Sprintf("the reference %q cannot be resolved in this Bundle: %s", ref, problem))
	}
	target := w.referenceType(ref)
	if local != nil {
		rt, _ := local["resourceType"].(string)
		if target != "" && rt != target {
			w.add("error", "structure", path, "reference type", fmt.Sprintf("the reference %q resolves to a %s in this resource, not a %s", ref, rt, target))
		}
		target = rt
	}
	if declared, _ := obj["type"].(string); declared != "" {
		if target != "" && declared != target {
			w.add("error", "structure", path, "reference type", fmt.Sprintf("the reference %q is to a %s but its type says %s", ref, target, declared))
		}
		if target == "" {
			target = declared
		}
	}
	if len(targets) == 0 || target == "" {
		return
	}
	var names, profiles []string
	for _, tp := range targets {
		tt := w.profileType(tp)
		if tt != "Resource" && tt != target {
			names = append(names, tt)
			continue
		}
		if tt != target || canonical(tp) == coreURL(target) {
			return
		}
		profiles = append(profiles, tp)
	}
	if len(profiles) == 0 {
		w.add("error", "structure", path, "reference target", fmt.Sprintf("the reference %q is to a %s, where only %s is allowed", ref, target, strings.Join(names, " or ")))
		return
	}
	res := local
	if res == nil {
		var why string
		if res, why = w.external(ref, target); res == nil {
			w.add("warning", "not-found", path, "reference target profile", fmt.Sprintf("the reference %q could not be resolved (%s), so its conformance to %s was not checked", ref, why, strings.Join(profiles, " or ")))
			return
		}
	}
	for _, tp := range profiles {
		if ok, err := w.r.ConformsTo(w.ctx, res, tp); err == nil && ok {
			return
		}
	}
	w.add("error", "structure", path, "reference target profile", fmt.Sprintf("the reference %q is to a %s that does not conform to %s", ref, target, strings.Join(profiles, " or ")))
}

// external finds a non-local target through the Resolver, or says why it
// cannot. A relative reference from a Bundle entry with a RESTful fullUrl
// names a resource at that entry's base (bundle.html#references), so it is
// handed over as an absolute URL.
func (w *walker) external(ref, target string) (map[string]any, string) {
	switch {
	case ref == "":
		return nil, "it has no literal reference"
	case strings.HasPrefix(ref, "#"):
		return nil, "no contained resource has that id"
	case strings.HasPrefix(ref, "urn:"):
		return nil, "no entry of the Bundle has that fullUrl"
	case w.resolver == nil:
		return nil, "no resolver of references outside the resource is configured"
	}
	if !isAbsolute(ref) && w.bundle != nil && w.fullURL != "" {
		if base, ok := restBase(w.fullURL); ok {
			ref = base + ref
		}
	}
	res, err := w.resolver(w.ctx, ref)
	switch {
	case err != nil:
		return nil, err.Error()
	case res == nil:
		return nil, "the target is not known here"
	}
	if rt, _ := res["resourceType"].(string); rt != target {
		return nil, fmt.Sprintf("the target found is a %s, not a %s", rt, target)
	}
	return res, ""
}

func (w *walker) profileType(url string) string {
	if name, ok := strings.CutPrefix(canonical(url), "http://hl7.org/fhir/StructureDefinition/"); ok {
		if m, err := fhirpath.R4(); err == nil && m.IsResource(name) {
			return name
		}
	}
	if sd, err := w.r.Definition(w.ctx, url); err == nil {
		return sd.Type
	}
	return ""
}

// referenceType is the resource type a reference names ("" when it cannot tell).
func (w *walker) referenceType(ref string) string {
	switch {
	case ref == "":
		return ""
	case strings.HasPrefix(ref, "#"):
		if res := w.contained(ref[1:]); res != nil {
			t, _ := res["resourceType"].(string)
			return t
		}
		return ""
	case strings.HasPrefix(ref, "urn:"):
		return ""
	}
	ref, _, _ = strings.Cut(ref, "?")
	parts := strings.Split(strings.TrimSuffix(ref, "/"), "/")
	if n := len(parts); n >= 4 && parts[n-2] == "_history" {
		parts = parts[:n-2]
	}
	if n := len(parts); n >= 2 {
		if m, err := fhirpath.R4(); err == nil && m.IsResource(parts[n-2]) {
			return parts[n-2]
		}
	}
	return ""
}

func (w *walker) contained(id string) map[string]any {
	res := w.container
	if res == nil {
		res, _ = w.res.(map[string]any)
	}
	list, _ := res["contained"].([]any)
	for _, c := range list {
		if m, ok := c.(map[string]any); ok && m["id"] == id {
			return m
		}
	}
	return nil
}

// equalJSON compares JSON values, numbers by value.
func equalJSON(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if !equalJSON(v, y[k]) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equalJSON(x[i], y[i]) {
				return false
			}
		}
		return true
	case json.Number:
		return numEqual(string(x), b)
	case float64:
		return numEqual(strconv.FormatFloat(x, 'g', -1, 64), b)
	}
	return a == b
}

func numEqual(s string, b any) bool {
	var t string
	switch y := b.(type) {
	case json.Number:
		t = string(y)
	case float64:
		t = strconv.FormatFloat(y, 'g', -1, 64)
	default:
		return false
	}
	fa, err1 := strconv.ParseFloat(s, 64)
	fb, err2 := strconv.ParseFloat(t, 64)
	return err1 == nil && err2 == nil && fa == fb
}

// matchesPattern reports whether v has every part of the pattern.
func matchesPattern(v, pat any) bool {
	switch p := pat.(type) {
	case map[string]any:
		m, ok := v.(map[string]any)
		if !ok {
			return false
		}
		for k, pv := range p {
			if !matchesPattern(m[k], pv) {
				return false
			}
		}
		return true
	case []any:
		list, ok := v.([]any)
		if !ok {
			if v == nil {
				return len(p) == 0
			}
			list = []any{v}
		}
		for _, pv := range p {
			found := false
			for _, x := range list {
				if matchesPattern(x, pv) {
					found = true
					break
				}
			}
			if !found {
				return false
			}
		}
		return true
	}
	return equalJSON(v, pat)
}

func jsonText(v any) string {
	if v == nil {
		return "nothing"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}
