package opioid

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Resolver returns the resource a reference of the request points to
// ("Medication/123"), nil when it does not exist. Contained resources
// ("#med") are resolved without it.
type Resolver func(reference string) (map[string]any, error)

// Contributor is one opioid ingredient of a request with its daily amount.
type Contributor struct {
	Ingredient string // RxNorm ingredient RxCUI
	Name       string // ingredient name
	Drug       string // RxNorm code of the product, when known
	// DailyDose is mg/day, or the delivery rate in mcg/hr for a
	// transdermal patch (Unit says which).
	DailyDose float64
	Unit      string
	Factor    float64
	MME       float64 // per day; 0 when Excluded
	Excluded  string  // why the ingredient does not count (buprenorphine)
}

// Result is the MME/day of one MedicationRequest.
type Result struct {
	Medication     string // what was prescribed, as text
	Opioid         bool   // the request is for an opioid of the table
	Benzodiazepine bool
	MME            float64 // per day, over the contributors
	Contributors   []Contributor
	// Reasons say why (part of) the MME could not be computed. A request
	// that names an opioid the table does not know has Opioid false and a
	// reason; a request for anything else has neither.
	Reasons []string
}

// Relevant reports whether the result matters to opioid safety.
func (r Result) Relevant() bool { return r.Opioid || r.Benzodiazepine || len(r.Reasons) > 0 }

// Complete reports whether every part of an opioid's MME was computed.
func (r Result) Complete() bool { return len(r.Reasons) == 0 }

// Strength units the computation accepts.
const (
	unitMg     = "mg"
	unitMcgHr  = "mcg/hr"
	unitMgDay  = "mg/day"
	formPatch  = "patch"
	formLiquid = "mL"
)

// product is what a request prescribes once identified: a table drug, a
// Medication with ingredient strengths, or a bare ingredient.
type product struct {
	rxcui       string
	name        string
	form        string // "" for a bare ingredient: doses must be a mass
	combination bool
	ingredients []Ingredient
}

// Compute returns the MME/day of a MedicationRequest: each dosage
// instruction's highest dose (doseRange high) times its highest number of
// doses per day (frequencyMax over the shortest period; asNeeded doses
// counted), times the strength of the product, times the CDC factor.
// Instructions with the same sequence run concurrently and add up;
// sequential ones (a taper) do not, so the largest sequence counts. A
// transdermal patch delivers its rate continuously: its MME is rate ×
// patches worn × factor whatever the change interval.
func (t *Table) Compute(req map[string]any, resolve Resolver) Result {
	var r Result
	p, why := t.identify(req, resolve, &r)
	if p == nil {
		if why != "" {
			r.Reasons = append(r.Reasons, why)
		}
		return r
	}
	r.Opioid = true
	dosages, _ := req["dosageInstruction"].([]any)
	if len(dosages) == 0 {
		r.Reasons = append(r.Reasons, "could not compute, because the request has no dosageInstruction")
		return r
	}
	// sequence -> ingredient -> daily amount
	groups := map[int64]map[string]float64{}
	for i, raw := range dosages {
		d, _ := raw.(map[string]any)
		amounts, why := t.dosage(d, p)
		if why != "" {
			r.Reasons = append(r.Reasons, fmt.Sprintf("could not compute dosageInstruction[%d], because %s", i, why))
			continue
		}
		seq := int64(0)
		if n, ok := number(d["sequence"]); ok {
			seq = int64(n)
		}
		g := groups[seq]
		if g == nil {
			g = map[string]float64{}
			groups[seq] = g
		}
		for k, v := range amounts {
			g[k] += v
		}
	}
	best, bestMME := map[string]float64(nil), -1.0
	seqs := make([]int64, 0, len(groups))
	for s := range groups {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	for _, s := range seqs {
		total := 0.0
		for ing, amt := range groups[s] {
			total += amt * t.factors[ing].Factor
		}
		if total > bestMME {
			best, bestMME = groups[s], total
		}
	}
	for _, in := range p.ingredients {
		amt, ok := best[in.RxCUI]
		if !ok {
			continue
		}
		f := t.factors[in.RxCUI]
		c := Contributor{Ingredient: in.RxCUI, Name: f.Name, Drug: p.rxcui, DailyDose: amt, Unit: unitMgDay, Factor: f.Factor, Excluded: f.Excluded}
		if in.Unit == unitMcgHr {
			c.Unit = unitMcgHr
		}
		if f.Excluded == "" {
			c.MME = amt * f.Factor
			r.MME += c.MME
		}
		r.Contributors = append(r.Contributors, c)
	}
	return r
}

// identify finds the product and whether it is a benzodiazepine; a nil
// product with a reason is a request that may be an opioid but cannot be
// computed, nil without a reason one that is not an opioid.
func (t *Table) identify(req map[string]any, resolve Resolver, r *Result) (*product, string) {
	var codes []map[string]any // RxNorm codings seen
	var med map[string]any
	if cc, ok := req["medicationCodeableConcept"].(map[string]any); ok {
		r.Medication = conceptText(cc)
		codes = rxnorm(cc)
	} else if ref, ok := req["medicationReference"].(map[string]any); ok {
		refStr, _ := ref["reference"].(string)
		r.Medication, _ = ref["display"].(string)
		switch {
		case strings.HasPrefix(refStr, "#"):
			med = contained(req, refStr[1:])
		case refStr != "" && resolve != nil:
			m, err := resolve(refStr)
			if err != nil {
				return nil, fmt.Sprintf("could not compute, because the Medication %s could not be read", refStr)
			}
			med = m
		}
		if med == nil {
			if t.namesOpioid(r.Medication) != "" || refStr != "" {
				return nil, fmt.Sprintf("could not compute, because the referenced Medication %q is not available", refStr)
			}
			return nil, ""
		}
		cc, _ := med["code"].(map[string]any)
		if r.Medication == "" {
			r.Medication = conceptText(cc)
		}
		codes = rxnorm(cc)
	}
	for _, c := range codes {
		if t.Benzodiazepine(str(c["code"])) {
			r.Benzodiazepine = true
		}
	}
	if med != nil {
		if p, why, done := t.fromMedication(med, r); done {
			return p, why
		}
	}
	for _, c := range codes {
		if d, ok := t.drugs[str(c["code"])]; ok {
			return &product{rxcui: d.RxCUI, name: d.Name, form: d.Form, ingredients: d.Ingredients, combination: strings.Contains(d.Name, " / ")}, ""
		}
	}
	for _, c := range codes {
		code := str(c["code"])
		if _, ok := t.factors[code]; ok {
			return &product{rxcui: code, name: t.factors[code].Name, ingredients: []Ingredient{{RxCUI: code, Unit: unitMg}}}, ""
		}
	}
	if r.Benzodiazepine {
		return nil, ""
	}
	if name := t.namesOpioid(r.Medication); name != "" {
		if len(codes) == 0 {
			return nil, fmt.Sprintf("could not compute, because %q names %s but carries no RxNorm code", r.Medication, name)
		}
		return nil, fmt.Sprintf("could not compute, because the RxNorm code %s (%q, which names %s) is not in the opioid table", str(codes[0]["code"]), r.Medication, name)
	}
	return nil, ""
}

// fromMedication builds the product from Medication.ingredient strengths.
// done is false when the Medication names no opioid ingredient, so that
// its code is looked up in the table instead.
func (t *Table) fromMedication(med map[string]any, r *Result) (*product, string, bool) {
	ings, _ := med["ingredient"].([]any)
	p := &product{name: r.Medication}
	cc, _ := med["code"].(map[string]any)
	if cs := rxnorm(cc); len(cs) > 0 {
		p.rxcui = str(cs[0]["code"])
	}
	opioids := 0
	var missing string
	for _, raw := range ings {
		ing, _ := raw.(map[string]any)
		item, _ := ing["itemCodeableConcept"].(map[string]any)
		for _, c := range rxnorm(item) {
			code := str(c["code"])
			if t.Benzodiazepine(code) {
				r.Benzodiazepine = true
			}
			f, ok := t.factors[code]
			if !ok {
				continue
			}
			opioids++
			in, form, why := strength(ing["strength"], code, f)
			if why != "" {
				missing = why
				continue
			}
			if p.form != "" && p.form != form {
				return nil, "could not compute, because the Medication's ingredient strengths are per different dose units", true
			}
			p.form = form
			p.ingredients = append(p.ingredients, in)
		}
	}
	if len(ings) > 1 {
		p.combination = true
	}
	switch {
	case opioids == 0:
		return nil, "", false
	case missing != "":
		if _, ok := t.drugs[p.rxcui]; ok {
			return nil, "", false // the table knows the product's strength
		}
		return nil, "could not compute, because " + missing, true
	}
	return p, "", true
}

// strength reads Medication.ingredient.strength (a Ratio) as an
// Ingredient of the table's units and the dose form it is per.
func strength(v any, code string, f Factor) (Ingredient, string, string) {
	ratio, _ := v.(map[string]any)
	num, _ := ratio["numerator"].(map[string]any)
	den, _ := ratio["denominator"].(map[string]any)
	nv, ok := number(num["value"])
	if !ok || nv <= 0 {
		return Ingredient{}, "", fmt.Sprintf("the Medication gives no strength for %s", f.Name)
	}
	dv := 1.0
	if x, ok := number(den["value"]); ok {
		dv = x
	}
	if dv <= 0 {
		return Ingredient{}, "", fmt.Sprintf("the strength of %s has a zero denominator", f.Name)
	}
	nu, du := unit(num), unit(den)
	if rate, ok := rateMcgHr(nv, nu); ok && countUnit(du) {
		return Ingredient{RxCUI: code, Strength: rate / dv, Unit: unitMcgHr}, formPatch, ""
	}
	if mg, ok := massMg(nv, nu); ok {
		switch {
		case countUnit(du):
			if f.Form == formPatch {
				return Ingredient{}, "", fmt.Sprintf("the CDC factor for %s applies to transdermal patches (mcg/hr), and this strength is per dose unit", f.Name)
			}
			return Ingredient{RxCUI: code, Strength: mg / dv, Unit: unitMg}, "tablet", ""
		case du == "ml" || du == "l":
			if du == "l" {
				dv *= 1000
			}
			return Ingredient{RxCUI: code, Strength: mg / dv, Unit: unitMg}, formLiquid, ""
		case du == "h" || du == "hr" || du == "hour":
			return Ingredient{RxCUI: code, Strength: mg * 1000 / dv, Unit: unitMcgHr}, formPatch, ""
		}
	}
	return Ingredient{}, "", fmt.Sprintf("the strength of %s is in %q per %q, which is not a mass per dose unit", f.Name, nu, du)
}

// dosage returns the daily amount per ingredient of one instruction.
func (t *Table) dosage(d map[string]any, p *product) (map[string]float64, string) {
	dose, du, why := highDose(d)
	if why != "" {
		return nil, why
	}
	out := map[string]float64{}
	if p.form == formPatch {
		if !countUnit(du) {
			return nil, fmt.Sprintf("a patch dose in %q is not a number of patches", du)
		}
		for _, in := range p.ingredients {
			out[in.RxCUI] = dose * in.Strength
		}
		return out, ""
	}
	if f := t.factors[p.ingredients[0].RxCUI]; f.Form == formPatch {
		if rate, ok := rateMcgHr(dose, du); ok && p.form == "" {
			out[p.ingredients[0].RxCUI] = rate
			return out, ""
		}
		return nil, fmt.Sprintf("the CDC factor for %s applies to transdermal patches only (a rate in mcg/hr)", f.Name)
	}
	perDay, why := t.dosesPerDay(d)
	if why != "" {
		return nil, why
	}
	if mg, ok := massMg(dose, du); ok {
		if p.form != "" && (len(p.ingredients) > 1 || p.combination) {
			return nil, fmt.Sprintf("a dose in %s is ambiguous for the combination product %q: give it in %s", du, p.name, p.form)
		}
		out[p.ingredients[0].RxCUI] = mg * perDay
		return out, ""
	}
	switch {
	case p.form == "":
		return nil, fmt.Sprintf("the medication is coded as an ingredient, so its dose must be a mass (mg), not %q", du)
	case p.form == formLiquid:
		ml, ok := volumeML(dose, du)
		if !ok {
			return nil, fmt.Sprintf("a dose of a liquid must be in mL, not %q", du)
		}
		dose = ml
	case !countUnit(du):
		return nil, fmt.Sprintf("the dose unit %q is neither a mass nor a number of %ss", du, p.form)
	}
	for _, in := range p.ingredients {
		out[in.RxCUI] = dose * in.Strength * perDay
	}
	return out, ""
}

// highDose is the dose of an instruction, the high end of a range.
func highDose(d map[string]any) (float64, string, string) {
	dars, _ := d["doseAndRate"].([]any)
	for _, raw := range dars {
		dar, _ := raw.(map[string]any)
		if q, ok := dar["doseQuantity"].(map[string]any); ok {
			if v, ok := number(q["value"]); ok && v > 0 {
				return v, unit(q), ""
			}
			return 0, "", "its doseQuantity has no positive value"
		}
		if rg, ok := dar["doseRange"].(map[string]any); ok {
			hi, _ := rg["high"].(map[string]any)
			if v, ok := number(hi["value"]); ok && v > 0 {
				return v, unit(hi), ""
			}
			return 0, "", "its doseRange has no high value"
		}
	}
	return 0, "", "it has no dose (doseAndRate.doseQuantity or doseRange)"
}

// dosesPerDay is the highest number of doses a day the timing allows.
func (t *Table) dosesPerDay(d map[string]any) (float64, string) {
	timing, _ := d["timing"].(map[string]any)
	if timing == nil {
		return 0, "it has no timing"
	}
	rep, _ := timing["repeat"].(map[string]any)
	freq, hasFreq := number(rep["frequencyMax"])
	if !hasFreq {
		freq, hasFreq = number(rep["frequency"])
	}
	// The shortest period gives the most doses: periodMax only lengthens it.
	period, hasPeriod := number(rep["period"])
	if hasPeriod {
		days, ok := periodDays(period, str(rep["periodUnit"]))
		if !ok {
			return 0, fmt.Sprintf("its timing period %v %q is not a positive time", period, str(rep["periodUnit"]))
		}
		if !hasFreq {
			freq = 1
		}
		if freq <= 0 {
			return 0, "its timing frequency is not positive"
		}
		return freq / days, ""
	}
	perDay := 0.0
	if tod, ok := rep["timeOfDay"].([]any); ok && len(tod) > 0 {
		perDay = float64(len(tod))
	} else if when, ok := rep["when"].([]any); ok && len(when) > 0 {
		perDay = float64(len(when))
	}
	if perDay > 0 {
		if hasFreq && freq > 0 {
			perDay *= freq
		}
		return perDay, ""
	}
	if code, ok := timing["code"].(map[string]any); ok {
		for _, c := range codings(code) {
			if n, ok := t.timing[strings.ToUpper(str(c["code"]))]; ok {
				return n, ""
			}
		}
		return 0, fmt.Sprintf("its timing code %q is not one the table knows", conceptText(code))
	}
	return 0, "its timing gives no frequency and period (timing.repeat)"
}

func periodDays(v float64, u string) (float64, bool) {
	per := map[string]float64{"s": 1.0 / 86400, "min": 1.0 / 1440, "h": 1.0 / 24, "d": 1, "wk": 7, "mo": 30, "a": 365}
	f, ok := per[u]
	if !ok || v <= 0 {
		return 0, false
	}
	return v * f, true
}

// number reads a JSON number (json.Number or float64).
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case json.Number:
		f, err := n.Float64()
		return f, err == nil && !math.IsInf(f, 0) && !math.IsNaN(f)
	case float64:
		return n, true
	case int:
		return float64(n), true
	}
	return 0, false
}

func str(v any) string { s, _ := v.(string); return s }

// unit is a Quantity's UCUM code, else its unit, in lower case.
func unit(q map[string]any) string {
	if c := str(q["code"]); c != "" {
		return strings.ToLower(c)
	}
	return strings.ToLower(strings.TrimSpace(str(q["unit"])))
}

func countUnit(u string) bool {
	u = strings.Trim(u, "{}")
	u = strings.TrimSuffix(strings.TrimSuffix(u, "(s)"), "s")
	switch u {
	case "", "1", "tbl", "tablet", "tab", "capsule", "cap", "film", "patch", "each", "ea", "system", "unit", "dose", "lozenge", "troche":
		return true
	}
	return false
}

func massMg(v float64, u string) (float64, bool) {
	switch u {
	case "mg":
		return v, true
	case "ug", "mcg", "µg":
		return v / 1000, true
	case "g":
		return v * 1000, true
	}
	return 0, false
}

func rateMcgHr(v float64, u string) (float64, bool) {
	switch strings.ReplaceAll(u, "hr", "h") {
	case "ug/h", "mcg/h", "µg/h":
		return v, true
	case "mg/h":
		return v * 1000, true
	}
	return 0, false
}

func volumeML(v float64, u string) (float64, bool) {
	switch u {
	case "ml":
		return v, true
	case "l":
		return v * 1000, true
	}
	return 0, false
}

func codings(cc map[string]any) []map[string]any {
	var out []map[string]any
	list, _ := cc["coding"].([]any)
	for _, raw := range list {
		if c, ok := raw.(map[string]any); ok {
			out = append(out, c)
		}
	}
	return out
}

func rxnorm(cc map[string]any) []map[string]any {
	var out []map[string]any
	for _, c := range codings(cc) {
		if str(c["system"]) == RxNorm && str(c["code"]) != "" {
			out = append(out, c)
		}
	}
	return out
}

func conceptText(cc map[string]any) string {
	if t := str(cc["text"]); t != "" {
		return t
	}
	for _, c := range codings(cc) {
		if d := str(c["display"]); d != "" {
			return d
		}
	}
	for _, c := range codings(cc) {
		if d := str(c["code"]); d != "" {
			return d
		}
	}
	return ""
}

func contained(res map[string]any, id string) map[string]any {
	list, _ := res["contained"].([]any)
	for _, raw := range list {
		if m, ok := raw.(map[string]any); ok && str(m["id"]) == id && str(m["resourceType"]) == "Medication" {
			return m
		}
	}
	return nil
}

// namesOpioid returns the opioid ingredient a free text names, if any.
func (t *Table) namesOpioid(text string) string {
	lower := strings.ToLower(text)
	names := make([]string, 0, len(t.factors))
	for _, f := range t.factors {
		names = append(names, f.Name)
	}
	sort.Strings(names)
	for _, n := range names {
		if n != "" && strings.Contains(lower, strings.ToLower(n)) {
			return n
		}
	}
	return ""
}

// Format renders an MME or dose for people and extensions: at most two
// decimals, no trailing zeros.
func Format(v float64) string {
	return strconv.FormatFloat(math.Round(v*100)/100, 'f', -1, 64)
}
