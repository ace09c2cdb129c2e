package fhirpath

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// fnImpl implements one function: in is the input collection, call gives
// access to the arguments (evaluated lazily so that where/select iterate).
type fnImpl func(c *evalCtx, in Collection, call *callNode, fr *frame) (Collection, error)

type fnSpec struct {
	minArgs, maxArgs int
	fn               fnImpl
	typeArg          bool // the single argument is a type specifier
}

// functionTable is the set of supported functions; it is never modified.
var functionTable = map[string]fnSpec{
	// Existence
	"empty": {0, 0, func(_ *evalCtx, in Collection, _ *callNode, _ *frame) (Collection, error) {
		return boolColl(len(in) == 0), nil
	}, false},
	"exists":     {0, 1, fnExists, false},
	"all":        {1, 1, fnAll, false},
	"allTrue":    {0, 0, boolAgg(true, true), false},
	"anyTrue":    {0, 0, boolAgg(false, true), false},
	"allFalse":   {0, 0, boolAgg(true, false), false},
	"anyFalse":   {0, 0, boolAgg(false, false), false},
	"subsetOf":   {1, 1, fnSubset(false), false},
	"supersetOf": {1, 1, fnSubset(true), false},
	"count": {0, 0, func(_ *evalCtx, in Collection, _ *callNode, _ *frame) (Collection, error) {
		return Collection{sysNode(int64(len(in)), TypeInteger)}, nil
	}, false},
	"distinct": {0, 0, func(c *evalCtx, in Collection, _ *callNode, _ *frame) (Collection, error) {
		return distinctAppend(c, nil, in), nil
	}, false},
	"isDistinct": {0, 0, func(c *evalCtx, in Collection, _ *callNode, _ *frame) (Collection, error) {
		return boolColl(len(distinctAppend(c, nil, in)) == len(in)), nil
	}, false},
	"hasValue": {0, 0, fnHasValue, false},
	"getValue": {0, 0, fnGetValue, false},
	"not":      {0, 0, fnNot, false},
	// Filtering and projection
	"where":       {1, 1, fnWhere, false},
	"select":      {1, 1, fnSelect, false},
	"repeat":      {1, 1, fnRepeat, false},
	"ofType":      {1, 1, fnOfType, true},
	"as":          {1, 1, fnAs, true},
	"is":          {1, 1, fnIs, true},
	"extension":   {1, 1, fnExtension, false},
	"resolve":     {0, 0, fnResolve, false},
	"conformsTo":  {1, 1, fnConformsTo, false},
	"children":    {0, 0, fnChildren, false},
	"descendants": {0, 0, fnDescendants, false},
	"aggregate":   {1, 2, fnAggregate, false},
	// Subsetting
	"single": {0, 0, fnSingle, false},
	"first": {0, 0, func(_ *evalCtx, in Collection, _ *callNode, _ *frame) (Collection, error) {
		return sliceColl(in, 0, 1), nil
	}, false},
	"last": {0, 0, func(_ *evalCtx, in Collection, _ *callNode, _ *frame) (Collection, error) {
		return sliceColl(in, len(in)-1, len(in)), nil
	}, false},
	"tail": {0, 0, func(_ *evalCtx, in Collection, _ *callNode, _ *frame) (Collection, error) {
		return sliceColl(in, 1, len(in)), nil
	}, false},
	"skip":      {1, 1, fnSkipTake(true), false},
	"take":      {1, 1, fnSkipTake(false), false},
	"intersect": {1, 1, fnIntersect(true), false},
	"exclude":   {1, 1, fnIntersect(false), false},
	"union":     {1, 1, fnUnion, false},
	"combine":   {1, 1, fnCombine, false},
	"iif":       {2, 3, fnIif, false},
	// Conversion
	"toBoolean":          {0, 0, convFn(toBoolean, false), false},
	"convertsToBoolean":  {0, 0, convFn(toBoolean, true), false},
	"toInteger":          {0, 0, convFn(toInteger, false), false},
	"convertsToInteger":  {0, 0, convFn(toInteger, true), false},
	"toDecimal":          {0, 0, convFn(toDecimal, false), false},
	"convertsToDecimal":  {0, 0, convFn(toDecimal, true), false},
	"toString":           {0, 0, convFn(toStringNode, false), false},
	"convertsToString":   {0, 0, convFn(toStringNode, true), false},
	"toDate":             {0, 0, convFn(toTemporal(KindDate), false), false},
	"convertsToDate":     {0, 0, convFn(toTemporal(KindDate), true), false},
	"toDateTime":         {0, 0, convFn(toTemporal(KindDateTime), false), false},
	"convertsToDateTime": {0, 0, convFn(toTemporal(KindDateTime), true), false},
	"toTime":             {0, 0, convFn(toTemporal(KindTime), false), false},
	"convertsToTime":     {0, 0, convFn(toTemporal(KindTime), true), false},
	"toQuantity":         {0, 1, fnToQuantity(false), false},
	"convertsToQuantity": {0, 1, fnToQuantity(true), false},
	// Strings
	"indexOf":        {1, 1, strFn(fnIndexOf), false},
	"substring":      {1, 2, strFn(fnSubstring), false},
	"startsWith":     {1, 1, strFn(strPred(strings.HasPrefix)), false},
	"endsWith":       {1, 1, strFn(strPred(strings.HasSuffix)), false},
	"contains":       {1, 1, strFn(strPred(strings.Contains)), false},
	"upper":          {0, 0, strFn(strMap(strings.ToUpper)), false},
	"lower":          {0, 0, strFn(strMap(strings.ToLower)), false},
	"trim":           {0, 0, strFn(strMap(strings.TrimSpace)), false},
	"replace":        {2, 2, strFn(fnReplace), false},
	"matches":        {1, 1, strFn(fnMatches), false},
	"replaceMatches": {2, 2, strFn(fnReplaceMatches), false},
	"matchesFull":    {1, 1, strFn(fnMatchesFull), false},
	"length": {0, 0, strFn(func(_ *evalCtx, s string, _ *callNode, _ *frame) (Collection, error) {
		return Collection{sysNode(int64(utf8.RuneCountInString(s)), TypeInteger)}, nil
	}), false},
	"toChars": {0, 0, strFn(fnToChars), false},
	"split":   {1, 1, strFn(fnSplit), false},
	"join":    {0, 1, fnJoin, false},
	// Math
	"abs":      {0, 0, mathFn(math.Abs, sameType), false},
	"ceiling":  {0, 0, mathFn(math.Ceil, intResult), false},
	"floor":    {0, 0, mathFn(math.Floor, intResult), false},
	"truncate": {0, 0, mathFn(math.Trunc, intResult), false},
	"exp":      {0, 0, mathFn(math.Exp, decResult), false},
	"ln":       {0, 0, mathFn(math.Log, decResult), false},
	"sqrt":     {0, 0, mathFn(math.Sqrt, decResult), false},
	"round":    {0, 1, fnRound, false},
	"log":      {1, 1, fnLog, false},
	"power":    {1, 1, fnPower, false},
	// Utility
	"trace":     {1, 2, fnTrace, false},
	"now":       {0, 0, fnNow(KindDateTime), false},
	"today":     {0, 0, fnNow(KindDate), false},
	"timeOfDay": {0, 0, fnNow(KindTime), false},
	"type":      {0, 0, fnType, false},
	"htmlChecks": {0, 0, func(_ *evalCtx, _ Collection, _ *callNode, _ *frame) (Collection, error) {
		// Narrative safety is the validator's job; FHIRPath invariants only
		// need a Boolean here.
		return boolColl(true), nil
	}, false},
}

func fnExists(c *evalCtx, in Collection, call *callNode, fr *frame) (Collection, error) {
	if len(call.args) == 0 {
		return boolColl(len(in) > 0), nil
	}
	out, err := filter(c, in, call.args[0], fr)
	if err != nil {
		return nil, err
	}
	return boolColl(len(out) > 0), nil
}

// iterate evaluates expr once per item with $this and $index bound.
func iterate(c *evalCtx, in Collection, expr node, fr *frame, each func(i int, it Node, res Collection) (bool, error)) error {
	for i, it := range in {
		if err := c.tick(1); err != nil {
			return err
		}
		one := Collection{it}
		sub := &frame{this: one, index: i, total: fr.total}
		res, err := expr.eval(c, one, sub)
		if err != nil {
			return err
		}
		more, err := each(i, it, res)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

func filter(c *evalCtx, in Collection, expr node, fr *frame) (Collection, error) {
	var out Collection
	err := iterate(c, in, expr, fr, func(_ int, it Node, res Collection) (bool, error) {
		b, known, err := singletonBool(c, res)
		if err != nil {
			return false, err
		}
		if known && b {
			out = append(out, it)
		}
		return true, nil
	})
	return out, err
}

func fnWhere(c *evalCtx, in Collection, call *callNode, fr *frame) (Collection, error) {
	return filter(c, in, call.args[0], fr)
}

func fnAll(c *evalCtx, in Collection, call *callNode, fr *frame) (Collection, error) {
	all := true
	err := iterate(c, in, call.args[0], fr, func(_ int, _ Node, res Collection) (bool, error) {
		b, known, err := singletonBool(c, res)
		if err != nil {
			return false, err
		}
		if !known || !b {
			all = false
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return boolColl(all), nil
}

func boolAgg(all, want bool) fnImpl {
	return func(c *evalCtx, in Collection, _ *callNode, _ *frame) (Collection, error) {
		for _, it := range in {
			b, ok := sysVal(c, it).(bool)
			if !ok {
				return nil, evalErr("expected booleans")
			}
			if all && b != want {
				return boolColl(false), nil
			}
			if !all && b == want {
				return boolColl(true), nil
			}
		}
		return boolColl(all), nil
	}
}

func fnSubset(superset bool) fnImpl {
	return func(c *evalCtx, in Collection, call *callNode, fr *frame) (Collection, error) {
		other, err := call.arg(c, 0, fr)
		if err != nil {
			return nil, err
		}
		small, big := in, other
		if superset {
			small, big = other, in
		}
		for _, it := range small {
			if !containsNode(c, big, it) {
				return boolColl(false), nil
			}
		}
		return boolColl(true), nil
	}
}

func fnHasValue(c *evalCtx, in Collection, _ *callNode, _ *frame) (Collection, error) {
	if len(in) != 1 {
		return boolColl(false), nil
	}
	switch in[0].value.(type) {
	case nil, map[string]any, []any:
		return boolColl(false), nil
	}
	return boolColl(true), nil
}

func fnGetValue(c *evalCtx, in Collection, _ *callNode, _ *frame) (Collection, error) {
	if len(in) != 1 {
		return nil, nil
	}
	v := sysVal(c, in[0])
	switch v.(type) {
	case nil, map[string]any:
		return nil, nil
	}
	return Collection{sysNode(v, inferType(v))}, nil
}

func fnNot(c *evalCtx, in Collection, _ *callNode, _ *frame) (Collection, error) {
	b, known, err := singletonBool(c, in)
	if err != nil || !known {
		return nil, err
	}
	return boolColl(!b), nil
}

func fnSelect(c *evalCtx, in Collection, call *callNode, fr *frame) (Collection, error) {
	var out Collection
	err := iterate(c, in, call.args[0], fr, func(_ int, _ Node, res Collection) (bool, error) {
		out = append(out, res...)
		return true, nil
	})
	return out, err
}

func fnRepeat(c *evalCtx, in Collection, call *callNode, fr *frame) (Collection, error) {
	var out Collection
	queue := in
	for len(queue) > 0 {
		var next Collection
		err := iterate(c, queue, call.args[0], fr, func(_ int, _ Node, res Collection) (bool, error) {
			for _, r := range res {
				if !containsNode(c, out, r) {
					out = append(out, r)
					next = append(next, r)
				}
			}
			return true, nil
		})
		if err != nil {
			return nil, err
		}
		queue = next
	}
	return out, nil
}

func fnOfType(c *evalCtx, in Collection, call *callNode, _ *frame) (Collection, error) {
	if err := c.checkType(call.typ); err != nil {
		return nil, err
	}
	var out Collection
	for _, it := range in {
		if c.castable(it, call.typ) {
			out = append(out, it)
		}
	}
	return out, nil
}

func fnAs(c *evalCtx, in Collection, call *callNode, fr *frame) (Collection, error) {
	if len(in) > 1 {
		return nil, evalErr("as() needs a single item, got %d", len(in))
	}
	return fnOfType(c, in, call, fr)
}

func fnIs(c *evalCtx, in Collection, call *callNode, _ *frame) (Collection, error) {
	if len(in) == 0 {
		return nil, nil
	}
	if len(in) > 1 {
		return nil, evalErr("is() needs a single item, got %d", len(in))
	}
	if err := c.checkType(call.typ); err != nil {
		return nil, err
	}
	return boolColl(c.isOfType(in[0], call.typ)), nil
}

func fnExtension(c *evalCtx, in Collection, call *callNode, fr *frame) (Collection, error) {
	urlColl, err := call.arg(c, 0, fr)
	if err != nil {
		return nil, err
	}
	if len(urlColl) != 1 {
		return nil, nil
	}
	url, ok := sysVal(c, urlColl[0]).(string)
	if !ok {
		return nil, evalErr("extension() needs a string url")
	}
	var out Collection
	for _, it := range in {
		for _, e := range c.children(nil, it, "extension") {
			if m, ok := e.value.(map[string]any); ok && m["url"] == url {
				e.typ = "Extension"
				out = append(out, e)
			}
		}
	}
	return out, nil
}

// fnResolve follows references. With a Resolver it fetches the target;
// otherwise, or when the Resolver does not know it, it yields a stub of
// the referenced type so that `resolve() is Patient` works without data.
func fnResolve(c *evalCtx, in Collection, _ *callNode, _ *frame) (Collection, error) {
	var out Collection
	for _, it := range in {
		ref := ""
		switch v := it.value.(type) {
		case string:
			ref = v
		case map[string]any:
			ref, _ = v["reference"].(string)
		}
		if ref == "" {
			continue
		}
		if strings.HasPrefix(ref, "#") {
			if n, ok := c.findContained(ref[1:]); ok {
				out = append(out, n)
			}
			continue
		}
		if c.resolver != nil {
			res, err := c.resolver(c.ctx, ref)
			if err != nil {
				return nil, fmt.Errorf("resolve %q: %w", ref, err)
			}
			if res != nil {
				out = append(out, makeNode(res, "", nil))
				continue
			}
		}
		if typ, id, ok := c.parseReference(ref); ok {
			out = append(out, Node{value: map[string]any{"resourceType": typ, "id": id}, typ: typ})
		}
	}
	return out, nil
}

func (c *evalCtx) findContained(id string) (Node, bool) {
	res, _ := c.lookupVar("resource")
	for _, r := range res {
		m, ok := r.value.(map[string]any)
		if !ok {
			continue
		}
		arr, _ := m["contained"].([]any)
		for _, x := range arr {
			if cm, ok := x.(map[string]any); ok && cm["id"] == id {
				return makeNode(cm, "", nil), true
			}
		}
	}
	return Node{}, false
}

// parseReference extracts type and id from "Type/id", ".../Type/id" and
// ".../Type/id/_history/n".
func (c *evalCtx) parseReference(ref string) (string, string, bool) {
	parts := strings.Split(ref, "/")
	if n := len(parts); n >= 4 && parts[n-2] == "_history" {
		parts = parts[:n-2]
	}
	n := len(parts)
	if n < 2 || parts[n-1] == "" || !c.model.IsResource(parts[n-2]) {
		return "", "", false
	}
	return parts[n-2], parts[n-1], true
}

// allChildren lists the direct children of a node in property order of the
// JSON object (sorted for determinism), typed through the model.
func (c *evalCtx) allChildren(out Collection, it Node) Collection {
	m, ok := it.value.(map[string]any)
	if !ok {
		if it.ext != nil {
			out = c.children(out, it, "id")
			out = c.children(out, it, "extension")
		}
		return out
	}
	for _, k := range sortedKeys(m) {
		if k == "resourceType" || strings.HasPrefix(k, "_") {
			continue
		}
		_, typ, _, known := c.model.Property(it.typ, k)
		if !known {
			typ = ""
		}
		out = appendJSON(out, m[k], m["_"+k], typ)
	}
	for _, k := range sortedKeys(m) {
		if strings.HasPrefix(k, "_") && m[k[1:]] == nil {
			_, typ, _, _ := c.model.Property(it.typ, k[1:])
			out = appendJSON(out, nil, m[k], typ)
		}
	}
	return out
}

func fnChildren(c *evalCtx, in Collection, _ *callNode, _ *frame) (Collection, error) {
	var out Collection
	for _, it := range in {
		out = c.allChildren(out, it)
	}
	return out, c.tick(len(out))
}

func fnDescendants(c *evalCtx, in Collection, _ *callNode, _ *frame) (Collection, error) {
	var out Collection
	queue := in
	for len(queue) > 0 {
		var next Collection
		for _, it := range queue {
			next = c.allChildren(next, it)
		}
		if err := c.tick(len(next) + 1); err != nil {
			return nil, err
		}
		out = append(out, next...)
		queue = next
	}
	return out, nil
}

func fnAggregate(c *evalCtx, in Collection, call *callNode, fr *frame) (Collection, error) {
	var total Collection
	if len(call.args) == 2 {
		var err error
		if total, err = call.arg(c, 1, fr); err != nil {
			return nil, err
		}
	}
	for i, it := range in {
		one := Collection{it}
		res, err := call.args[0].eval(c, one, &frame{this: one, index: i, total: total})
		if err != nil {
			return nil, err
		}
		total = res
	}
	return total, nil
}

func fnSingle(_ *evalCtx, in Collection, _ *callNode, _ *frame) (Collection, error) {
	if len(in) > 1 {
		return nil, evalErr("single() on %d items", len(in))
	}
	return in, nil
}

func sliceColl(in Collection, from, to int) Collection {
	from = max(from, 0)
	to = min(to, len(in))
	if from >= to {
		return nil
	}
	return in[from:to]
}

func fnSkipTake(skip bool) fnImpl {
	return func(c *evalCtx, in Collection, call *callNode, fr *frame) (Collection, error) {
		arg, err := call.arg(c, 0, fr)
		if err != nil {
			return nil, err
		}
		n, ok := asInteger(arg)
		if !ok {
			return nil, evalErr("expected an integer")
		}
		if n > int64(len(in)) {
			n = int64(len(in))
		}
		if skip {
			return sliceColl(in, int(n), len(in)), nil
		}
		return sliceColl(in, 0, int(n)), nil
	}
}

func fnIntersect(keep bool) fnImpl {
	return func(c *evalCtx, in Collection, call *callNode, fr *frame) (Collection, error) {
		other, err := call.arg(c, 0, fr)
		if err != nil {
			return nil, err
		}
		var out Collection
		for _, it := range in {
			if containsNode(c, other, it) == keep {
				if keep && containsNode(c, out, it) {
					continue
				}
				out = append(out, it)
			}
		}
		return out, nil
	}
}

func fnUnion(c *evalCtx, in Collection, call *callNode, fr *frame) (Collection, error) {
	other, err := call.arg(c, 0, fr)
	if err != nil {
		return nil, err
	}
	return union(c, in, other), nil
}

func fnCombine(c *evalCtx, in Collection, call *callNode, fr *frame) (Collection, error) {
	other, err := call.arg(c, 0, fr)
	if err != nil {
		return nil, err
	}
	return append(append(Collection{}, in...), other...), nil
}

func fnIif(c *evalCtx, in Collection, call *callNode, fr *frame) (Collection, error) {
	sub := fr
	if call.target != nil {
		if len(in) > 1 {
			return nil, evalErr("iif() on %d items", len(in))
		}
		sub = &frame{this: in, index: fr.index, total: fr.total}
	}
	cond, err := call.args[0].eval(c, sub.this, sub)
	if err != nil {
		return nil, err
	}
	b, known, err := singletonBool(c, cond)
	if err != nil {
		return nil, err
	}
	if known && b {
		return call.args[1].eval(c, sub.this, sub)
	}
	if len(call.args) == 3 {
		return call.args[2].eval(c, sub.this, sub)
	}
	return nil, nil
}

// convFn wraps a single-item conversion: toX() yields the converted value
// or empty, convertsToX() yields whether the conversion succeeds.
func convFn(conv func(c *evalCtx, n Node) (Node, bool), test bool) fnImpl {
	return func(c *evalCtx, in Collection, _ *callNode, _ *frame) (Collection, error) {
		if len(in) == 0 {
			return nil, nil
		}
		if len(in) > 1 {
			return nil, evalErr("conversion of %d items", len(in))
		}
		out, ok := conv(c, in[0])
		if test {
			return boolColl(ok), nil
		}
		if !ok {
			return nil, nil
		}
		return Collection{out}, nil
	}
}

func toBoolean(c *evalCtx, n Node) (Node, bool) {
	switch v := sysVal(c, n).(type) {
	case bool:
		return sysNode(v, TypeBoolean), true
	case int64:
		if v == 0 || v == 1 {
			return sysNode(v == 1, TypeBoolean), true
		}
	case float64:
		if v == 0 || v == 1 {
			return sysNode(v == 1, TypeBoolean), true
		}
	case string:
		switch strings.ToLower(v) {
		case "true", "t", "yes", "y", "1", "1.0":
			return sysNode(true, TypeBoolean), true
		case "false", "f", "no", "n", "0", "0.0":
			return sysNode(false, TypeBoolean), true
		}
	}
	return Node{}, false
}

var integerRE = regexp.MustCompile(`^[+-]?\d+$`)
var decimalRE = regexp.MustCompile(`^[+-]?\d+(\.\d+)?$`)

func toInteger(c *evalCtx, n Node) (Node, bool) {
	switch v := sysVal(c, n).(type) {
	case int64:
		return sysNode(v, TypeInteger), true
	case bool:
		if v {
			return sysNode(int64(1), TypeInteger), true
		}
		return sysNode(int64(0), TypeInteger), true
	case string:
		if integerRE.MatchString(v) {
			if i, err := strconv.ParseInt(v, 10, 64); err == nil {
				return sysNode(i, TypeInteger), true
			}
		}
	}
	return Node{}, false
}

func toDecimal(c *evalCtx, n Node) (Node, bool) {
	switch v := sysVal(c, n).(type) {
	case int64:
		return sysNode(float64(v), TypeDecimal), true
	case float64:
		return sysNode(v, TypeDecimal), true
	case bool:
		if v {
			return sysNode(1.0, TypeDecimal), true
		}
		return sysNode(0.0, TypeDecimal), true
	case string:
		if decimalRE.MatchString(v) {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				return sysNode(f, TypeDecimal), true
			}
		}
	}
	return Node{}, false
}

func toStringNode(c *evalCtx, n Node) (Node, bool) {
	if s, ok := stringOf(c, n); ok {
		return sysNode(s, TypeString), true
	}
	return Node{}, false
}

// stringOf renders a primitive or quantity the way toString() does.
func stringOf(c *evalCtx, n Node) (string, bool) {
	if jn, ok := n.value.(json.Number); ok {
		return string(jn), true
	}
	if n.text != "" {
		return n.text, true
	}
	switch v := sysVal(c, n).(type) {
	case string:
		return v, true
	case bool:
		return strconv.FormatBool(v), true
	case int64:
		return strconv.FormatInt(v, 10), true
	case float64:
		return formatDecimal(v), true
	case Temporal:
		return v.String(), true
	case Quantity:
		return v.String(), true
	}
	return "", false
}

func toTemporal(kind TemporalKind) func(c *evalCtx, n Node) (Node, bool) {
	typ := map[TemporalKind]string{KindDate: TypeDate, KindDateTime: TypeDateTime, KindTime: TypeTime}[kind]
	return func(c *evalCtx, n Node) (Node, bool) {
		switch v := sysVal(c, n).(type) {
		case Temporal:
			switch {
			case v.Kind == kind:
				return sysNode(v, typ), true
			case kind == KindDate && v.Kind == KindDateTime:
				v.Kind = KindDate
				v.Prec = min(v.Prec, PrecDay)
				v.HasTZ = false
				v.truncate()
				return sysNode(v, typ), true
			case kind == KindDateTime && v.Kind == KindDate:
				v.Kind = KindDateTime
				return sysNode(v, typ), true
			}
		case string:
			s := strings.TrimPrefix(v, "T")
			if t, err := ParseTemporal(s, kind); err == nil {
				return sysNode(t, typ), true
			}
			if kind == KindDate {
				if t, err := ParseTemporal(s, KindDateTime); err == nil {
					return toTemporal(KindDate)(c, sysNode(t, TypeDateTime))
				}
			}
		}
		return Node{}, false
	}
}

var quantityRE = regexp.MustCompile(`^([+-]?\d+(?:\.\d+)?)\s*(?:'([^']+)'|([a-zA-Z]+))?$`)

func fnToQuantity(test bool) fnImpl {
	return func(c *evalCtx, in Collection, call *callNode, fr *frame) (Collection, error) {
		if len(in) == 0 {
			return nil, nil
		}
		if len(in) > 1 {
			return nil, evalErr("conversion of %d items", len(in))
		}
		var q Quantity
		ok := false
		switch v := sysVal(c, in[0]).(type) {
		case Quantity:
			q, ok = v, true
		case int64:
			q, ok = Quantity{Value: float64(v), Unit: "1"}, true
		case float64:
			q, ok = Quantity{Value: v, Unit: "1"}, true
		case bool:
			q, ok = Quantity{Value: map[bool]float64{true: 1}[v], Unit: "1"}, true
		case string:
			if m := quantityRE.FindStringSubmatch(strings.TrimSpace(v)); m != nil {
				f, err := strconv.ParseFloat(m[1], 64)
				unit := m[2]
				if m[3] != "" {
					unit = m[3]
					if !calendarKeyword(unit) {
						break
					}
				}
				if unit == "" {
					unit = "1"
				}
				q, ok = Quantity{Value: f, Unit: unit}, err == nil
			}
		}
		if ok && len(call.args) == 1 {
			target, err := call.arg(c, 0, fr)
			if err != nil {
				return nil, err
			}
			if len(target) == 1 {
				unit, _ := sysVal(c, target[0]).(string)
				if unit != q.Unit {
					vq, uq := normQuantity(q)
					vt, ut := normQuantity(Quantity{Value: 1, Unit: unit})
					if uq != ut || vt == 0 {
						ok = false
					} else {
						q = Quantity{Value: vq / vt, Unit: unit}
					}
				}
			}
		}
		if test {
			return boolColl(ok), nil
		}
		if !ok {
			return nil, nil
		}
		return Collection{sysNode(q, TypeQuantity)}, nil
	}
}

type strImpl func(c *evalCtx, s string, call *callNode, fr *frame) (Collection, error)

// strFn applies a string function to a single string input; empty in, empty out.
func strFn(f strImpl) fnImpl {
	return func(c *evalCtx, in Collection, call *callNode, fr *frame) (Collection, error) {
		if len(in) == 0 {
			return nil, nil
		}
		if len(in) > 1 {
			return nil, evalErr("string function on %d items", len(in))
		}
		s, ok := sysVal(c, in[0]).(string)
		if !ok {
			return nil, evalErr("expected a string, got %s", typeLabel(in[0]))
		}
		return f(c, s, call, fr)
	}
}

// strArg evaluates argument i as a single string; ok is false when empty.
func strArg(c *evalCtx, call *callNode, i int, fr *frame) (string, bool, error) {
	v, err := call.arg(c, i, fr)
	if err != nil || len(v) == 0 {
		return "", false, err
	}
	if len(v) > 1 {
		return "", false, evalErr("argument %d has %d items", i+1, len(v))
	}
	s, ok := sysVal(c, v[0]).(string)
	if !ok {
		return "", false, evalErr("argument %d must be a string", i+1)
	}
	return s, true, nil
}

func strPred(p func(s, x string) bool) strImpl {
	return func(c *evalCtx, s string, call *callNode, fr *frame) (Collection, error) {
		x, ok, err := strArg(c, call, 0, fr)
		if err != nil || !ok {
			return nil, err
		}
		return boolColl(p(s, x)), nil
	}
}

func strMap(f func(string) string) strImpl {
	return func(_ *evalCtx, s string, _ *callNode, _ *frame) (Collection, error) {
		return Collection{sysNode(f(s), TypeString)}, nil
	}
}

func fnIndexOf(c *evalCtx, s string, call *callNode, fr *frame) (Collection, error) {
	x, ok, err := strArg(c, call, 0, fr)
	if err != nil || !ok {
		return nil, err
	}
	i := strings.Index(s, x)
	if i > 0 {
		i = utf8.RuneCountInString(s[:i])
	}
	return Collection{sysNode(int64(i), TypeInteger)}, nil
}

func fnSubstring(c *evalCtx, s string, call *callNode, fr *frame) (Collection, error) {
	startC, err := call.arg(c, 0, fr)
	if err != nil || len(startC) == 0 {
		return nil, err
	}
	start, ok := asInteger(startC)
	if !ok {
		return nil, evalErr("substring() start must be an integer")
	}
	r := []rune(s)
	if start < 0 || start >= int64(len(r)) {
		return nil, nil
	}
	end := int64(len(r))
	if len(call.args) == 2 {
		lc, err := call.arg(c, 1, fr)
		if err != nil {
			return nil, err
		}
		if len(lc) > 0 {
			l, ok := asInteger(lc)
			if !ok {
				return nil, evalErr("substring() length must be an integer")
			}
			end = min(max(start+l, start), end)
		}
	}
	return Collection{sysNode(string(r[start:end]), TypeString)}, nil
}

func fnReplace(c *evalCtx, s string, call *callNode, fr *frame) (Collection, error) {
	pat, ok1, err := strArg(c, call, 0, fr)
	if err != nil {
		return nil, err
	}
	rep, ok2, err := strArg(c, call, 1, fr)
	if err != nil || !ok1 || !ok2 {
		return nil, err
	}
	return Collection{sysNode(strings.ReplaceAll(s, pat, rep), TypeString)}, nil
}

func compileRegex(pat string) (*regexp.Regexp, error) {
	re, err := regexp.Compile("(?s)" + pat)
	if err != nil {
		return nil, evalErr("bad regular expression %q: %v", pat, err)
	}
	return re, nil
}

func fnMatches(c *evalCtx, s string, call *callNode, fr *frame) (Collection, error) {
	pat, ok, err := strArg(c, call, 0, fr)
	if err != nil || !ok {
		return nil, err
	}
	re, err := compileRegex(pat)
	if err != nil {
		return nil, err
	}
	return boolColl(re.MatchString(s)), nil
}

func fnMatchesFull(c *evalCtx, s string, call *callNode, fr *frame) (Collection, error) {
	pat, ok, err := strArg(c, call, 0, fr)
	if err != nil || !ok {
		return nil, err
	}
	re, err := compileRegex("^(?:" + pat + ")$")
	if err != nil {
		return nil, err
	}
	return boolColl(re.MatchString(s)), nil
}

func fnReplaceMatches(c *evalCtx, s string, call *callNode, fr *frame) (Collection, error) {
	pat, ok1, err := strArg(c, call, 0, fr)
	if err != nil {
		return nil, err
	}
	rep, ok2, err := strArg(c, call, 1, fr)
	if err != nil || !ok1 || !ok2 {
		return nil, err
	}
	if pat == "" {
		return Collection{sysNode(s, TypeString)}, nil
	}
	re, err := compileRegex(pat)
	if err != nil {
		return nil, err
	}
	return Collection{sysNode(re.ReplaceAllString(s, rep), TypeString)}, nil
}

func fnToChars(_ *evalCtx, s string, _ *callNode, _ *frame) (Collection, error) {
	var out Collection
	for _, r := range s {
		out = append(out, sysNode(string(r), TypeString))
	}
	return out, nil
}

func fnSplit(c *evalCtx, s string, call *callNode, fr *frame) (Collection, error) {
	sep, ok, err := strArg(c, call, 0, fr)
	if err != nil || !ok {
		return nil, err
	}
	var out Collection
	for _, p := range strings.Split(s, sep) {
		out = append(out, sysNode(p, TypeString))
	}
	return out, nil
}

func fnJoin(c *evalCtx, in Collection, call *callNode, fr *frame) (Collection, error) {
	sep := ""
	if len(call.args) == 1 {
		s, ok, err := strArg(c, call, 0, fr)
		if err != nil {
			return nil, err
		}
		if ok {
			sep = s
		}
	}
	parts := make([]string, 0, len(in))
	for _, it := range in {
		s, ok := sysVal(c, it).(string)
		if !ok {
			return nil, evalErr("join() needs strings")
		}
		parts = append(parts, s)
	}
	return Collection{sysNode(strings.Join(parts, sep), TypeString)}, nil
}

// numArg reads the single numeric input of a math function.
func numArg(c *evalCtx, in Collection) (any, bool, error) {
	if len(in) == 0 {
		return nil, false, nil
	}
	if len(in) > 1 {
		return nil, false, evalErr("math function on %d items", len(in))
	}
	v := sysVal(c, in[0])
	switch v.(type) {
	case int64, float64, Quantity:
		return v, true, nil
	}
	return nil, false, evalErr("expected a number, got %s", typeLabel(in[0]))
}

// mathResult says what type a math function yields.
type mathResult uint8

const (
	sameType  mathResult = iota // abs: Integer stays Integer
	intResult                   // ceiling, floor, truncate
	decResult                   // exp, ln, sqrt
)

func mathFn(f func(float64) float64, res mathResult) fnImpl {
	return func(c *evalCtx, in Collection, _ *callNode, _ *frame) (Collection, error) {
		v, ok, err := numArg(c, in)
		if err != nil || !ok {
			return nil, err
		}
		if q, isQ := v.(Quantity); isQ {
			return Collection{sysNode(Quantity{Value: f(q.Value), Unit: q.Unit}, TypeQuantity)}, nil
		}
		x, _ := toFloat(v)
		r := f(x)
		if math.IsNaN(r) || math.IsInf(r, 0) {
			return nil, nil
		}
		_, isInt := v.(int64)
		if res == intResult || res == sameType && isInt {
			return Collection{sysNode(int64(r), TypeInteger)}, nil
		}
		return Collection{sysNode(r, TypeDecimal)}, nil
	}
}

func fnRound(c *evalCtx, in Collection, call *callNode, fr *frame) (Collection, error) {
	v, ok, err := numArg(c, in)
	if err != nil || !ok {
		return nil, err
	}
	x, _ := toFloat(v)
	p := int64(0)
	if len(call.args) == 1 {
		pc, err := call.arg(c, 0, fr)
		if err != nil {
			return nil, err
		}
		if p, ok = asInteger(pc); !ok || p < 0 {
			return nil, evalErr("round() precision must be a non-negative integer")
		}
	}
	return Collection{sysNode(roundTo(x, int(p)), TypeDecimal)}, nil
}

func twoNums(c *evalCtx, in Collection, call *callNode, fr *frame) (float64, float64, bool, error) {
	v, ok, err := numArg(c, in)
	if err != nil || !ok {
		return 0, 0, false, err
	}
	ac, err := call.arg(c, 0, fr)
	if err != nil {
		return 0, 0, false, err
	}
	a, ok, err := numArg(c, ac)
	if err != nil || !ok {
		return 0, 0, false, err
	}
	x, _ := toFloat(v)
	y, _ := toFloat(a)
	return x, y, true, nil
}

func fnLog(c *evalCtx, in Collection, call *callNode, fr *frame) (Collection, error) {
	x, base, ok, err := twoNums(c, in, call, fr)
	if err != nil || !ok {
		return nil, err
	}
	r := math.Log(x) / math.Log(base)
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return nil, nil
	}
	return Collection{sysNode(r, TypeDecimal)}, nil
}

func fnPower(c *evalCtx, in Collection, call *callNode, fr *frame) (Collection, error) {
	x, y, ok, err := twoNums(c, in, call, fr)
	if err != nil || !ok {
		return nil, err
	}
	r := math.Pow(x, y)
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return nil, nil
	}
	_, xi := sysVal(c, in[0]).(int64)
	if xi && y == math.Trunc(y) && y >= 0 && math.Abs(r) < 1<<62 {
		return Collection{sysNode(int64(r), TypeInteger)}, nil
	}
	return Collection{sysNode(r, TypeDecimal)}, nil
}

func fnTrace(c *evalCtx, in Collection, call *callNode, fr *frame) (Collection, error) {
	name, _, err := strArg(c, call, 0, fr)
	if err != nil {
		return nil, err
	}
	shown := in
	if len(call.args) == 2 {
		var sel Collection
		err := iterate(c, in, call.args[1], fr, func(_ int, _ Node, res Collection) (bool, error) {
			sel = append(sel, res...)
			return true, nil
		})
		if err != nil {
			return nil, err
		}
		shown = sel
	}
	vals := make([]any, len(shown))
	for i, n := range shown {
		vals[i] = n.value
	}
	c.logger.DebugContext(c.ctx, "fhirpath trace", "name", name, "values", vals)
	return in, nil
}

func fnNow(kind TemporalKind) fnImpl {
	return func(c *evalCtx, _ Collection, _ *callNode, _ *frame) (Collection, error) {
		if c.now.IsZero() {
			// One instant per evaluation: now() = now() must hold.
			c.now = time.Now()
		}
		g := c.now
		_, off := g.Zone()
		t := Temporal{Kind: kind, Year: g.Year(), Month: int(g.Month()), Day: g.Day(), Hour: g.Hour(), Minute: g.Minute(), Second: g.Second(), Milli: g.Nanosecond() / 1e6, HasTZ: true, TZ: off / 60}
		switch kind {
		case KindDate:
			t.Prec, t.HasTZ = PrecDay, false
			t.truncate()
			return Collection{sysNode(t, TypeDate)}, nil
		case KindTime:
			t.Prec, t.HasTZ = PrecMillisecond, false
			t.Year, t.Month, t.Day = 0, 0, 0
			return Collection{sysNode(t, TypeTime)}, nil
		}
		t.Prec = PrecMillisecond
		return Collection{sysNode(t, TypeDateTime)}, nil
	}
}

// fnType returns a SimpleTypeInfo / ClassInfo-like object with namespace
// and name, as type() does.
func fnType(c *evalCtx, in Collection, _ *callNode, _ *frame) (Collection, error) {
	var out Collection
	for _, it := range in {
		typ := it.typ
		if typ == "" {
			typ = inferType(it.value)
		}
		if typ == "" {
			continue
		}
		ns, name := "FHIR", typ
		if n, found := strings.CutPrefix(typ, "System."); found {
			ns, name = "System", n
		}
		out = append(out, Node{value: map[string]any{"namespace": ns, "name": name}, typ: "System.TypeInfo"})
	}
	return out, nil
}

// fnConformsTo answers conformsTo(url) for a single resource through the
// injected ConformsTo hook.
func fnConformsTo(c *evalCtx, in Collection, call *callNode, fr *frame) (Collection, error) {
	if len(in) == 0 {
		return nil, nil
	}
	if len(in) > 1 {
		return nil, evalErr("conformsTo() needs a single item, got %d", len(in))
	}
	arg, err := call.arg(c, 0, fr)
	if err != nil {
		return nil, err
	}
	if len(arg) != 1 {
		return nil, evalErr("conformsTo() needs one URL")
	}
	url, ok := arg[0].value.(string)
	if !ok {
		return nil, evalErr("conformsTo() needs a string URL")
	}
	if c.conforms == nil {
		return nil, evalErr("conformsTo(%q): no profile validator is configured", url)
	}
	ok, err = c.conforms(c.ctx, in[0].value, url)
	if err != nil {
		return nil, evalErr("conformsTo(%q): %v", url, err)
	}
	return boolColl(ok), nil
}
