// Package demo generates the pain-clinic demonstration data set that
// `anodyne demo` loads: chronic-pain patients with daily pain scores,
// remote-monitoring vitals, opioid prescriptions, PEG panels, care plans
// and weekly virtual visits.
//
// It owns the generator (a pure function of Options: the same seed and end
// day give byte-identical resources with fixed ids) and the loader, which
// writes the resources not yet stored through the FHIR server's import
// pipeline (validation, indexing, commit observers). It must not know
// about HTTP, authorization or any storage backend in particular, nor
// compute clinical logic (MME, alerts): that is for the server's
// observers to derive from what it writes.
package demo

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Course is the shape of a patient's pain over the period.
type Course string

// The three courses a clinician tells apart at a glance.
const (
	Improving Course = "improving"
	Stable    Course = "stable"
	Worsening Course = "worsening"
)

// Options say what to generate.
type Options struct {
	Patients int       // default 25
	Days     int       // default 90
	Seed     uint64    // default 14
	End      time.Time // the last day with data (UTC midnight is used); required
}

func (o Options) withDefaults() Options {
	if o.Patients <= 0 {
		o.Patients = 25
	}
	if o.Days <= 0 {
		o.Days = 90
	}
	if o.Seed == 0 {
		o.Seed = 14
	}
	y, m, d := o.End.UTC().Date()
	o.End = time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	return o
}

// PatientPlan is what the generator decided for one patient, for tests and
// for the summary printed by `anodyne demo`.
type PatientPlan struct {
	ID        string
	Name      string
	Course    Course
	Condition string   // SNOMED CT display
	Opioids   []string // RxNorm clinical-drug codes of active opioid prescriptions
	Benzo     bool     // an active benzodiazepine besides the opioids
	Breaches  []string // LOINC codes of the vitals with a sustained breach
	Glucose   bool     // carries a glucometer
	GapStart  int      // first day index of the device gap
	GapDays   int      // length of the device gap
}

// DataSet is the generated resources (in dependency order: a resource's
// references point to resources earlier in the list) and the plan.
type DataSet struct {
	Resources []map[string]any
	Patients  []PatientPlan
	// Clinician is the Practitioner id of the demo clinician.
	Clinician string
	Days      int       // days of data
	End       time.Time // the last day
}

// ClinicianID is the Practitioner the demo clinician account signs in as.
const ClinicianID = "demo-clinician"

// Well-known LOINC codes of the data set.
const (
	LOINCPain      = "72514-3"
	LOINCPEGPanel  = "91148-7"
	LOINCPEGMean   = "91147-9"
	LOINCSpO2      = "2708-6"
	LOINCBP        = "85354-9"
	LOINCSystolic  = "8480-6"
	LOINCDiastolic = "8462-4"
	LOINCHeartRate = "8867-4"
	LOINCGlucose   = "41653-7"
	LOINCWeight    = "29463-7"
	LOINCPainPlan  = "80764-4"
)

// Generate builds the data set. It is deterministic in opts.
func Generate(opts Options) DataSet {
	opts = opts.withDefaults()
	g := &gen{opts: opts, rng: rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15))}
	ds := DataSet{Clinician: ClinicianID, Days: opts.Days, End: opts.End}
	ds.Resources = append(ds.Resources, practitioner())
	for i := 0; i < opts.Patients; i++ {
		plan := g.plan(i)
		ds.Patients = append(ds.Patients, plan)
		ds.Resources = append(ds.Resources, g.patient(i, plan)...)
	}
	return ds
}

type gen struct {
	opts Options
	rng  *rand.Rand
}

var (
	givenNames  = []string{"Maria", "James", "Aisha", "Robert", "Chen", "Linda", "Samuel", "Priya", "David", "Grace", "Omar", "Helen", "Lucas", "Fatima", "George", "Yuki", "Daniel", "Rosa", "Ivan", "Nora", "Ahmed", "Elena", "Peter", "Amara", "Tom", "Leila", "Marco", "Ingrid", "Kofi", "Sara"}
	familyNames = []string{"Alvarez", "Brennan", "Khan", "Dubois", "Wei", "Okafor", "Novak", "Patel", "Moreau", "Lindqvist", "Haddad", "Schmidt", "Costa", "Rahman", "Byrne", "Tanaka", "Levi", "Jimenez", "Petrov", "Murphy", "Nasser", "Rossi", "Walsh", "Mensah", "Keller", "Farah", "Bianchi", "Olsen", "Asante", "Cohen"}
	conditions  = []struct{ code, display string }{
		{"278860009", "Chronic low back pain"},
		{"203082005", "Fibromyalgia"},
		{"239873007", "Osteoarthritis of knee"},
		{"247398009", "Neuropathic pain"},
		{"279039007", "Low back pain"},
		{"82423001", "Chronic pain"},
	}
)

// product is an RxNorm clinical drug with a structured daily regimen.
type product struct {
	rxcui, display string
	dose           float64 // per administration
	unit, ucum     string
	perDay         int // administrations per day
	benzo          bool
}

// The opioid regimens, from low MME to one above 90 (the MME/day in the
// comment is dose x perDay x CDC factor, for the reader's convenience).
var (
	tramadol    = product{"835603", "tramadol hydrochloride 50 MG Oral Tablet", 50, "mg", "mg", 3, false}                          // 30
	hydrocodone = product{"857002", "acetaminophen 325 MG / hydrocodone bitartrate 5 MG Oral Tablet", 5, "mg", "mg", 4, false}     // 20
	oxycodone   = product{"1049621", "oxycodone hydrochloride 5 MG Oral Tablet", 5, "mg", "mg", 4, false}                          // 30
	oxyER       = product{"1049502", "12 HR oxycodone hydrochloride 10 MG Extended Release Oral Tablet", 10, "mg", "mg", 2, false} // 30
	morphineER  = product{"891878", "12 HR morphine sulfate 15 MG Extended Release Oral Tablet", 60, "mg", "mg", 2, false}         // 120
	morphineIR  = product{"892582", "morphine sulfate 15 MG Oral Tablet", 15, "mg", "mg", 3, false}                                // 45
	fentanyl    = product{"245134", "72 HR fentanyl 0.025 MG/HR Transdermal System", 25, "mcg/h", "ug/h", 1, false}                // 60
	hydromorph  = product{"897696", "hydromorphone hydrochloride 2 MG Oral Tablet", 2, "mg", "mg", 4, false}                       // 40
	codeine     = product{"993781", "acetaminophen 300 MG / codeine phosphate 30 MG Oral Tablet", 30, "mg", "mg", 2, false}        // 9
	alprazolam  = product{"308048", "alprazolam 0.5 MG Oral Tablet", 0.5, "mg", "mg", 2, true}
	regimens    = [][]product{
		{morphineER, oxycodone}, // index 2: the one above 90 (worsening)
		{tramadol},
		{hydrocodone},
		{oxycodone},
		{hydrocodone, alprazolam}, // index 5 below: opioid + benzodiazepine
		{oxyER},
		{fentanyl},
		{codeine},
		{hydromorph},
		{morphineIR},
		{},
	}
)

func (g *gen) plan(i int) PatientPlan {
	p := PatientPlan{
		ID:   patientID(i),
		Name: givenNames[i%len(givenNames)] + " " + familyNames[(i*7+3)%len(familyNames)],
	}
	switch i % 3 {
	case 0:
		p.Course = Improving
	case 1:
		p.Course = Stable
	default:
		p.Course = Worsening
	}
	p.Condition = conditions[i%len(conditions)].display
	for _, pr := range g.regimen(i) {
		if pr.benzo {
			p.Benzo = true
		} else {
			p.Opioids = append(p.Opioids, pr.rxcui)
		}
	}
	p.Glucose = i%4 == 3
	// Sustained breaches: a few patients, each a different vital.
	switch i {
	case 2:
		p.Breaches = []string{LOINCSpO2}
	case 7:
		p.Breaches = []string{LOINCBP}
	case 11:
		p.Breaches = []string{LOINCGlucose}
		p.Glucose = true
	case 13:
		p.Breaches = []string{LOINCHeartRate}
	case 17:
		p.Breaches = []string{LOINCWeight}
	}
	p.GapDays = 2 + g.rng.IntN(4)
	p.GapStart = 10 + g.rng.IntN(max(1, g.opts.Days-p.GapDays-20))
	return p
}

// regimen is patient i's active prescriptions: patient index 2 gets the
// regimen above 90 MME/day, index 5 the benzodiazepine co-prescription.
func (g *gen) regimen(i int) []product {
	switch i {
	case 2:
		return regimens[0]
	case 5:
		return regimens[4]
	}
	choices := regimens[1:]
	r := choices[(i*5+1)%len(choices)]
	if len(r) == 1 && r[0].benzo {
		return []product{tramadol}
	}
	return r
}

func patientID(i int) string { return fmt.Sprintf("demo-p%02d", i+1) }

// day returns the UTC midnight of day index d (0 is the first day).
func (g *gen) day(d int) time.Time {
	return g.opts.End.AddDate(0, 0, d-(g.opts.Days-1))
}

func (g *gen) at(d int, hour, minute int) string {
	t := g.day(d).Add(time.Duration(hour)*time.Hour + time.Duration(minute)*time.Minute)
	return t.Format(time.RFC3339)
}

func (g *gen) patient(i int, p PatientPlan) []map[string]any {
	pid := p.ID
	subj := ref("Patient", pid)
	cond := conditions[i%len(conditions)]
	gender := []string{"female", "male"}[i%2]
	birth := time.Date(1950+(i*7)%45, time.Month(1+i%12), 1+(i*3)%28, 0, 0, 0, 0, time.UTC)
	var out []map[string]any
	given, family := splitName(p.Name)
	out = append(out, map[string]any{
		"resourceType": "Patient", "id": pid,
		"identifier":          []any{map[string]any{"system": "urn:anodyne:demo:mrn", "value": fmt.Sprintf("MRN-%05d", 1000+i)}},
		"active":              true,
		"name":                []any{map[string]any{"use": "official", "family": family, "given": []any{given}}},
		"gender":              gender,
		"birthDate":           birth.Format("2006-01-02"),
		"telecom":             []any{map[string]any{"system": "phone", "value": fmt.Sprintf("+1-555-01%02d", i)}},
		"generalPractitioner": []any{ref("Practitioner", ClinicianID)},
	})
	condID := pid + "-cond"
	out = append(out, map[string]any{
		"resourceType": "Condition", "id": condID,
		"clinicalStatus":     cc("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"),
		"verificationStatus": cc("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "Confirmed"),
		"category":           []any{cc("http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item", "Problem List Item")},
		"code":               cc("http://snomed.info/sct", cond.code, cond.display),
		"subject":            subj,
		"onsetDateTime":      g.day(0).AddDate(-1-i%5, 0, 0).Format("2006-01-02"),
	})
	var medRefs []any
	for k, pr := range g.regimen(i) {
		id := fmt.Sprintf("%s-med%d", pid, k+1)
		medRefs = append(medRefs, ref("MedicationRequest", id))
		out = append(out, g.medicationRequest(id, subj, pr, i))
	}
	out = append(out, g.painScores(pid, p)...)
	out = append(out, g.peg(pid, p)...)
	out = append(out, g.vitals(pid, p)...)
	goalID := pid + "-goal"
	out = append(out, g.goal(goalID, subj, p))
	out = append(out, g.carePlan(pid+"-careplan", subj, condID, goalID, medRefs))
	out = append(out, g.visits(pid, subj, i)...)
	return out
}

func splitName(n string) (string, string) {
	for k := 0; k < len(n); k++ {
		if n[k] == ' ' {
			return n[:k], n[k+1:]
		}
	}
	return n, ""
}

func practitioner() map[string]any {
	return map[string]any{
		"resourceType": "Practitioner", "id": ClinicianID, "active": true,
		"name": []any{map[string]any{"prefix": []any{"Dr."}, "family": "Rivera", "given": []any{"Alex"}}},
	}
}

func ref(typ, id string) map[string]any { return map[string]any{"reference": typ + "/" + id} }

func cc(system, code, display string) map[string]any {
	return map[string]any{"coding": []any{map[string]any{"system": system, "code": code, "display": display}}, "text": display}
}

func qty(v float64, unit, code string) map[string]any {
	return map[string]any{"value": round(v, 1), "unit": unit, "system": "http://unitsofmeasure.org", "code": code}
}

func round(v float64, places int) float64 {
	p := math.Pow(10, float64(places))
	return math.Round(v*p) / p
}

func category(code, display string) []any {
	return []any{cc("http://terminology.hl7.org/CodeSystem/observation-category", code, display)}
}

func (g *gen) medicationRequest(id string, subj map[string]any, pr product, i int) map[string]any {
	authored := g.day(0).AddDate(0, 0, -(30 + i*3))
	perPeriod := map[string]any{"frequency": pr.perDay, "period": 1, "periodUnit": "d"}
	if pr.ucum == "ug/h" {
		// A 72-hour patch: one applied every three days, delivering the
		// dose continuously.
		perPeriod = map[string]any{"frequency": 1, "period": 72, "periodUnit": "h"}
	}
	text := fmt.Sprintf("%g %s %d times a day", pr.dose, pr.unit, pr.perDay)
	if pr.ucum == "ug/h" {
		text = "apply one 25 mcg/hr patch every 72 hours"
	}
	return map[string]any{
		"resourceType": "MedicationRequest", "id": id,
		"status": "active", "intent": "order",
		"category":                  []any{cc("http://terminology.hl7.org/CodeSystem/medicationrequest-category", "community", "Community")},
		"medicationCodeableConcept": cc("http://www.nlm.nih.gov/research/umls/rxnorm", pr.rxcui, pr.display),
		"subject":                   subj,
		"authoredOn":                authored.Format("2006-01-02"),
		"requester":                 ref("Practitioner", ClinicianID),
		"dosageInstruction": []any{map[string]any{
			"text":        text,
			"timing":      map[string]any{"repeat": perPeriod},
			"route":       cc("http://snomed.info/sct", routeCode(pr), routeDisplay(pr)),
			"doseAndRate": []any{map[string]any{"doseQuantity": qty(pr.dose, pr.unit, pr.ucum)}},
		}},
		"dispenseRequest": map[string]any{"expectedSupplyDuration": map[string]any{"value": 30, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"}},
	}
}

func routeCode(pr product) string {
	if pr.ucum == "ug/h" {
		return "45890007"
	}
	return "26643006"
}

func routeDisplay(pr product) string {
	if pr.ucum == "ug/h" {
		return "Transdermal route"
	}
	return "Oral route"
}

// painLevel is the underlying (noise-free) pain on day d of n.
func painLevel(c Course, d, n int) float64 {
	f := float64(d) / float64(max(1, n-1))
	switch c {
	case Improving:
		return 7.2 - 3.6*f
	case Worsening:
		return 3.8 + 3.8*f*f
	}
	return 5.0 + 0.3*math.Cos(f*4*math.Pi) // symmetric: no net trend
}

// painMissed says the diary has no entry today: patients miss about one
// day in fifteen.
func painMissed(rng *rand.Rand) bool { return rng.IntN(15) == 0 }

func (g *gen) painScores(pid string, p PatientPlan) []map[string]any {
	var out []map[string]any
	n := g.opts.Days
	for d := 0; d < n; d++ {
		if painMissed(g.rng) && d != n-1 {
			continue
		}
		v := painLevel(p.Course, d, n) + g.rng.NormFloat64()*0.7
		score := int(math.Round(math.Min(10, math.Max(0, v))))
		out = append(out, map[string]any{
			"resourceType": "Observation", "id": fmt.Sprintf("%s-pain-d%03d", pid, d),
			"status":            "final",
			"category":          category("survey", "Survey"),
			"code":              cc("http://loinc.org", LOINCPain, "Pain severity - 0-10 verbal numeric rating [Score] - Reported"),
			"subject":           ref("Patient", pid),
			"effectiveDateTime": g.at(d, 18, g.rng.IntN(120)),
			"valueQuantity":     map[string]any{"value": score, "unit": "{score}", "system": "http://unitsofmeasure.org", "code": "{score}"},
		})
	}
	return out
}

// peg is a weekly PEG panel with its three items as components and the
// mean score as a member observation (and as its own searchable code).
func (g *gen) peg(pid string, p PatientPlan) []map[string]any {
	var out []map[string]any
	n := g.opts.Days
	for d := n - 1; d >= 0; d -= 7 {
		base := painLevel(p.Course, d, n)
		item := func() int { return int(math.Round(math.Min(10, math.Max(0, base+g.rng.NormFloat64()*0.8)))) }
		a, b, c := item(), item(), item()
		mean := round(float64(a+b+c)/3, 1)
		when := g.at(d, 17, 30)
		meanID := fmt.Sprintf("%s-pegmean-d%03d", pid, d)
		out = append(out, map[string]any{
			"resourceType": "Observation", "id": meanID, "status": "final",
			"category":          category("survey", "Survey"),
			"code":              cc("http://loinc.org", LOINCPEGMean, "PEG 3 item pain scale mean score"),
			"subject":           ref("Patient", pid),
			"effectiveDateTime": when,
			"valueQuantity":     map[string]any{"value": mean, "unit": "{score}", "system": "http://unitsofmeasure.org", "code": "{score}"},
		}, map[string]any{
			"resourceType": "Observation", "id": fmt.Sprintf("%s-peg-d%03d", pid, d), "status": "final",
			"category":          category("survey", "Survey"),
			"code":              cc("http://loinc.org", LOINCPEGPanel, "PEG 3 item pain scale"),
			"subject":           ref("Patient", pid),
			"effectiveDateTime": when,
			"hasMember":         []any{ref("Observation", meanID)},
			"component": []any{
				component("75893-8", "Pain in past week", a),
				component("91145-3", "Pain interference with enjoyment of life", b),
				component("91146-1", "Pain interference with general activity", c),
			},
		})
	}
	return out
}

func component(code, display string, v int) map[string]any {
	return map[string]any{"code": cc("http://loinc.org", code, display), "valueInteger": v}
}

// Sustained breaches run over the last breachDays days of the period.
const breachDays = 5

func (g *gen) vitals(pid string, p PatientPlan) []map[string]any {
	var out []map[string]any
	n := g.opts.Days
	breach := map[string]bool{}
	for _, c := range p.Breaches {
		breach[c] = true
	}
	weight := 62 + g.rng.Float64()*40
	for d := 0; d < n; d++ {
		if d >= p.GapStart && d < p.GapStart+p.GapDays {
			continue // the devices were not used: a visible gap
		}
		late := d >= n-breachDays
		morning := 7*60 + g.rng.IntN(90)
		h, m := morning/60, morning%60
		sys := 124 + g.rng.NormFloat64()*8
		dia := 79 + g.rng.NormFloat64()*6
		if late && breach[LOINCBP] {
			sys, dia = 168+g.rng.Float64()*10, 98+g.rng.Float64()*6
		}
		out = append(out, vital(pid, "bp", d, g.at(d, h, m), map[string]any{
			"code": vitalCode(LOINCBP, "Blood pressure panel with all children optional"),
			"component": []any{
				map[string]any{"code": vitalCode(LOINCSystolic, "Systolic blood pressure"), "valueQuantity": qty(math.Round(sys), "mmHg", "mm[Hg]")},
				map[string]any{"code": vitalCode(LOINCDiastolic, "Diastolic blood pressure"), "valueQuantity": qty(math.Round(dia), "mmHg", "mm[Hg]")},
			},
		}))
		hr := 72 + g.rng.NormFloat64()*7
		if late && breach[LOINCHeartRate] {
			hr = 108 + g.rng.Float64()*10
		}
		out = append(out, vital(pid, "hr", d, g.at(d, h, m), map[string]any{
			"code": vitalCode(LOINCHeartRate, "Heart rate"), "valueQuantity": qty(math.Round(hr), "beats/minute", "/min"),
		}))
		spo2 := math.Min(100, 96.5+g.rng.NormFloat64()*1.1)
		if late && breach[LOINCSpO2] {
			spo2 = 88 + g.rng.Float64()*2.5
		}
		out = append(out, vital(pid, "spo2", d, g.at(d, h, m+3), map[string]any{
			"code": map[string]any{"coding": []any{
				map[string]any{"system": "http://loinc.org", "code": LOINCSpO2, "display": "Oxygen saturation in Arterial blood"},
				map[string]any{"system": "http://loinc.org", "code": "59408-5", "display": "Oxygen saturation in Arterial blood by Pulse oximetry"},
			}, "text": "SpO2"},
			"valueQuantity": qty(math.Round(spo2), "%", "%"),
		}))
		weight += g.rng.NormFloat64() * 0.15
		w := weight
		if late && breach[LOINCWeight] {
			w = weight + 0.6*float64(d-(n-breachDays)+1)
		}
		out = append(out, vital(pid, "wt", d, g.at(d, h, m+6), map[string]any{
			"code": vitalCode(LOINCWeight, "Body weight"), "valueQuantity": qty(w, "kg", "kg"),
		}))
		if p.Glucose {
			for k, hour := range []int{h, 19} {
				glu := 128 + g.rng.NormFloat64()*18
				if late && breach[LOINCGlucose] {
					glu = 58 + g.rng.Float64()*10
				}
				o := vital(pid, fmt.Sprintf("glu%d", k+1), d, g.at(d, hour, m+10), map[string]any{
					"code": vitalCode(LOINCGlucose, "Glucose [Mass/volume] in Capillary blood by Glucometer"), "valueQuantity": qty(math.Round(glu), "mg/dL", "mg/dL"),
				})
				o["category"] = category("laboratory", "Laboratory")
				out = append(out, o)
			}
		}
	}
	return out
}

func vitalCode(code, display string) map[string]any {
	return map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": code, "display": display}}, "text": display}
}

func vital(pid, kind string, d int, when string, fields map[string]any) map[string]any {
	o := map[string]any{
		"resourceType": "Observation", "id": fmt.Sprintf("%s-%s-d%03d", pid, kind, d), "status": "final",
		"category":          category("vital-signs", "Vital Signs"),
		"subject":           ref("Patient", pid),
		"effectiveDateTime": when,
		"device":            map[string]any{"display": "Home monitoring kit"},
	}
	for k, v := range fields {
		o[k] = v
	}
	return o
}

func (g *gen) goal(id string, subj map[string]any, p PatientPlan) map[string]any {
	achievement := map[Course][2]string{
		Improving: {"improving", "Improving"}, Stable: {"no-change", "No Change"}, Worsening: {"worsening", "Worsening"},
	}[p.Course]
	return map[string]any{
		"resourceType": "Goal", "id": id,
		"lifecycleStatus":   "active",
		"achievementStatus": cc("http://terminology.hl7.org/CodeSystem/goal-achievement", achievement[0], achievement[1]),
		"description":       map[string]any{"text": "Pain score 4 or lower on most days"},
		"subject":           subj,
		"startDate":         g.day(0).Format("2006-01-02"),
		"target": []any{map[string]any{
			"measure":     cc("http://loinc.org", LOINCPain, "Pain severity - 0-10 verbal numeric rating [Score] - Reported"),
			"detailRange": map[string]any{"high": map[string]any{"value": 4, "unit": "{score}", "system": "http://unitsofmeasure.org", "code": "{score}"}},
			"dueDate":     g.day(g.opts.Days-1).AddDate(0, 3, 0).Format("2006-01-02"),
		}},
	}
}

func (g *gen) carePlan(id string, subj map[string]any, condID, goalID string, meds []any) map[string]any {
	acts := []any{
		map[string]any{"detail": map[string]any{
			"kind": "ServiceRequest", "code": cc("http://snomed.info/sct", "91251008", "Physical therapy procedure"),
			"status": "in-progress", "description": "Physical therapy twice a week"}},
		map[string]any{"detail": map[string]any{
			"kind": "ServiceRequest", "code": cc("http://snomed.info/sct", "228557008", "Cognitive and behavioral therapy"),
			"status": "scheduled", "description": "Cognitive behavioural therapy, weekly virtual sessions"}},
	}
	for _, m := range meds {
		acts = append(acts, map[string]any{"reference": m})
	}
	return map[string]any{
		"resourceType": "CarePlan", "id": id,
		"status": "active", "intent": "plan",
		"title": "Chronic pain management plan",
		"category": []any{
			cc("http://hl7.org/fhir/us/core/CodeSystem/careplan-category", "assess-plan", "Assessment and Plan of Treatment"),
			cc("http://loinc.org", LOINCPainPlan, "Pain medicine Plan of care note"),
		},
		"subject":   subj,
		"period":    map[string]any{"start": g.day(0).Format("2006-01-02")},
		"addresses": []any{ref("Condition", condID)},
		"goal":      []any{ref("Goal", goalID)},
		"activity":  acts,
	}
}

// visits are weekly virtual visits: the past ones finished, the next two
// planned.
func (g *gen) visits(pid string, subj map[string]any, i int) []map[string]any {
	var out []map[string]any
	first := i % 7
	for d, k := first, 0; d < g.opts.Days+14; d, k = d+7, k+1 {
		start := g.day(d).Add(time.Duration(14+i%4)*time.Hour + time.Duration(15*(i%3))*time.Minute)
		status := "finished"
		if d >= g.opts.Days {
			status = "planned"
		}
		e := map[string]any{
			"resourceType": "Encounter", "id": fmt.Sprintf("%s-visit%02d", pid, k+1),
			"status":      status,
			"class":       map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR", "display": "virtual"},
			"serviceType": cc("http://snomed.info/sct", "394882004", "Pain management"),
			"subject":     subj,
			"participant": []any{map[string]any{"individual": ref("Practitioner", ClinicianID)}},
			"period":      map[string]any{"start": start.Format(time.RFC3339), "end": start.Add(20 * time.Minute).Format(time.RFC3339)},
		}
		if status == "planned" {
			e["period"] = map[string]any{"start": start.Format(time.RFC3339)}
		}
		out = append(out, e)
	}
	return out
}
