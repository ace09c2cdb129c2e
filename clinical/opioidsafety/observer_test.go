package opioidsafety_test

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/clinical/opioidsafety"
)

// Expected MME in these tests is written as the guideline's formula:
// strength (mg) × tablets × doses/day × CDC factor.
const (
	oxy45      = 5 * 1 * 6 * 1.5  // oxycodone 5 mg, 1 tab q4h
	tramadol40 = 50 * 1 * 4 * 0.2 // tramadol 50 mg, 1 tab q6h
	fentanyl60 = 25 * 1 * 2.4     // fentanyl 25 mcg/hr patch
	methadone  = 10 * 1 * 3 * 4.7 // methadone 10 mg TID
)

// mr is a MedicationRequest for RxNorm code, n units every hours h.
func mr(id, patient, status, code, display string, n, h float64) string {
	return fmt.Sprintf(`{"resourceType":"MedicationRequest","id":%q,"status":%q,"intent":"order",
	 "subject":{"reference":"Patient/%s"},
	 "medicationCodeableConcept":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":%q,"display":%q}]},
	 "dosageInstruction":[{"doseAndRate":[{"doseQuantity":{"value":%v,"unit":"tablet","system":"http://unitsofmeasure.org","code":"{tbl}"}}],
	   "timing":{"repeat":{"frequency":1,"period":%v,"periodUnit":"h"}}}]}`, id, status, patient, code, display, n, h)
}

func patient(id string) string {
	return fmt.Sprintf(`{"resourceType":"Patient","id":%q,"name":[{"family":"Test"}]}`, id)
}

// mmeExt reads our extension: the request's MME and the patient total.
func mmeExt(t *testing.T, res map[string]any) (mme, total float64, reasons []string) {
	t.Helper()
	mme = math.NaN()
	exts, _ := res["extension"].([]any)
	found := 0
	for _, e := range exts {
		if get(e, "url") != opioidsafety.ExtensionURL {
			continue
		}
		found++
		for _, s := range get(e, "extension").([]any) {
			switch get(s, "url") {
			case "mmePerDay":
				mme = num(t, get(s, "valueDecimal"))
			case "patientTotal":
				total = num(t, get(s, "valueDecimal"))
			case "notComputed":
				reasons = append(reasons, get(s, "valueString").(string))
			}
		}
	}
	if found != 1 {
		t.Fatalf("%d opioid extensions on %v", found, res["id"])
	}
	return mme, total, reasons
}

func num(t *testing.T, v any) float64 {
	t.Helper()
	n, ok := v.(json.Number)
	if !ok {
		t.Fatalf("%v is not a number", v)
	}
	f, _ := strconv.ParseFloat(string(n), 64)
	return f
}

func near(a, b float64) bool { return math.Abs(a-b) < 0.006 } // two decimals as recorded

type issueState struct {
	status, severity string
	version          string
	implicated       []string
}

func readIssue(t *testing.T, s *server, id string) (issueState, bool) {
	t.Helper()
	r := s.do(t, "GET", "/fhir/DetectedIssue/"+id, "")
	if r.Status == http.StatusNotFound {
		return issueState{}, false
	}
	m := r.Expect(t, 200).JSON(t)
	st := issueState{status: get(m, "status").(string), severity: fmt.Sprint(get(m, "severity")), version: get(m, "meta", "versionId").(string)}
	for _, x := range get(m, "implicated").([]any) {
		st.implicated = append(st.implicated, get(x, "reference").(string))
	}
	if d, _ := m["detail"].(string); d == "" {
		t.Errorf("DetectedIssue/%s has no detail", id)
	}
	return st, true
}

func TestObserverRecordsMMEAndIssues(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.Name, func(t *testing.T) {
			s := start(t, be.Open(t), nil)
			mmeID, benzoID := opioidsafety.IssueIDs("p1")
			s.do(t, "PUT", "/fhir/Patient/p1", patient("p1")).Expect(t, 201)

			// 45: recorded, no issue. A forged extension from the client is replaced.
			body := strings.Replace(mr("mr1", "p1", "active", "1049621", "oxycodone 5 MG", 1, 4), `"intent"`,
				`"extension":[{"url":"`+opioidsafety.ExtensionURL+`","extension":[{"url":"mmePerDay","valueDecimal":1}]}],"intent"`, 1)
			got := s.do(t, "PUT", "/fhir/MedicationRequest/mr1", body).Expect(t, 201).JSON(t)
			if m, tot, _ := mmeExt(t, got); !near(m, oxy45) || !near(tot, oxy45) {
				t.Fatalf("mr1: MME %v total %v, want %v %v", m, tot, oxy45, oxy45)
			}
			stored := s.do(t, "GET", "/fhir/MedicationRequest/mr1", "").Expect(t, 200).JSON(t)
			if m, _, _ := mmeExt(t, stored); !near(m, oxy45) {
				t.Fatalf("stored MME %v", m)
			}
			if _, ok := readIssue(t, s, mmeID); ok {
				t.Fatal("an MME issue below 50")
			}

			// + 40 = 85: moderate, implicating both.
			got = s.do(t, "PUT", "/fhir/MedicationRequest/mr2", mr("mr2", "p1", "active", "835603", "tramadol 50 MG", 1, 6)).Expect(t, 201).JSON(t)
			if m, tot, _ := mmeExt(t, got); !near(m, tramadol40) || !near(tot, oxy45+tramadol40) {
				t.Fatalf("mr2: MME %v total %v", m, tot)
			}
			is, ok := readIssue(t, s, mmeID)
			if !ok || is.status != "final" || is.severity != "moderate" || is.version != "1" ||
				strings.Join(is.implicated, ",") != "MedicationRequest/mr1,MedicationRequest/mr2" {
				t.Fatalf("at 85: %+v %v", is, ok)
			}

			// The same request again: the issue is not rewritten.
			s.do(t, "PUT", "/fhir/MedicationRequest/mr2", mr("mr2", "p1", "active", "835603", "tramadol 50 MG", 1, 6)).Expect(t, 200)
			if is, _ := readIssue(t, s, mmeID); is.version != "1" {
				t.Fatalf("unchanged total rewrote the issue: version %s", is.version)
			}

			// + fentanyl patch 60 = 145: high.
			patch := `{"resourceType":"MedicationRequest","id":"mr3","status":"active","intent":"order","subject":{"reference":"Patient/p1"},
			 "medicationCodeableConcept":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"245134"}],"text":"fentanyl 25 mcg/hr patch"},
			 "dosageInstruction":[{"doseAndRate":[{"doseQuantity":{"value":1,"unit":"patch"}}],"timing":{"repeat":{"frequency":1,"period":72,"periodUnit":"h"}}}]}`
			got = s.do(t, "PUT", "/fhir/MedicationRequest/mr3", patch).Expect(t, 201).JSON(t)
			if m, tot, _ := mmeExt(t, got); !near(m, fentanyl60) || !near(tot, oxy45+tramadol40+fentanyl60) {
				t.Fatalf("mr3: MME %v total %v", m, tot)
			}
			if is, _ := readIssue(t, s, mmeID); is.severity != "high" || is.version != "2" || len(is.implicated) != 3 {
				t.Fatalf("at 145: %+v", is)
			}

			// A benzodiazepine: the overlap issue.
			benzo := `{"resourceType":"MedicationRequest","id":"bz","status":"active","intent":"order","subject":{"reference":"Patient/p1"},
			 "medicationCodeableConcept":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"596","display":"alprazolam"}]}}`
			s.do(t, "PUT", "/fhir/MedicationRequest/bz", benzo).Expect(t, 201)
			bi, ok := readIssue(t, s, benzoID)
			if !ok || bi.status != "final" || bi.severity != "high" || !contains(bi.implicated, "MedicationRequest/bz") || !contains(bi.implicated, "MedicationRequest/mr1") {
				t.Fatalf("overlap: %+v %v", bi, ok)
			}

			// Stopping the patch: back to 85, moderate.
			s.do(t, "PUT", "/fhir/MedicationRequest/mr3", strings.Replace(patch, `"active"`, `"stopped"`, 1)).Expect(t, 200)
			if is, _ := readIssue(t, s, mmeID); is.severity != "moderate" || is.status != "final" {
				t.Fatalf("after stopping the patch: %+v", is)
			}
			// Deleting tramadol: 45, resolved (cancelled), history kept.
			s.do(t, "DELETE", "/fhir/MedicationRequest/mr2", "").Expect(t, 204)
			if is, _ := readIssue(t, s, mmeID); is.status != "cancelled" {
				t.Fatalf("after the total fell to 45: %+v", is)
			}
			stored = s.do(t, "GET", "/fhir/MedicationRequest/mr1", "").Expect(t, 200).JSON(t)
			// Deleting the benzodiazepine resolves the overlap; the opioid
			// it implicated still exists, so it was real: cancelled.
			s.do(t, "DELETE", "/fhir/MedicationRequest/bz", "").Expect(t, 204)
			if bi, _ := readIssue(t, s, benzoID); bi.status != "cancelled" {
				t.Fatalf("overlap after the benzodiazepine went: %+v", bi)
			}
			// Nothing duplicated: one issue of each id, found by search.
			b := s.do(t, "GET", "/fhir/DetectedIssue?patient=p1", "").Expect(t, 200).JSON(t)
			if n := len(get(b, "entry").([]any)); n != 2 {
				t.Fatalf("%d DetectedIssues for p1, want 2", n)
			}

			// A request entered in error takes its issue with it.
			s.do(t, "PUT", "/fhir/Patient/p3", patient("p3")).Expect(t, 201)
			s.do(t, "PUT", "/fhir/MedicationRequest/m3", mr("m3", "p3", "active", "864706", "methadone 10 MG", 1, 8)).Expect(t, 201)
			id3, _ := opioidsafety.IssueIDs("p3")
			if is, _ := readIssue(t, s, id3); is.severity != "high" {
				t.Fatalf("methadone %v MME/day: %+v", methadone, is)
			}
			s.do(t, "DELETE", "/fhir/MedicationRequest/m3", "").Expect(t, 204)
			if is, _ := readIssue(t, s, id3); is.status != "entered-in-error" {
				t.Fatalf("after its only request was deleted: %+v", is)
			}
		})
	}
}

// TestObserverTransaction: the total counts the other writes of the same
// Commit, which the store does not show yet.
func TestObserverTransaction(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.Name, func(t *testing.T) {
			s := start(t, be.Open(t), nil)
			entry := func(res string) string {
				var m map[string]any
				_ = json.Unmarshal([]byte(res), &m)
				return fmt.Sprintf(`{"resource":%s,"request":{"method":"PUT","url":"%s/%s"}}`, res, m["resourceType"], m["id"])
			}
			bundle := `{"resourceType":"Bundle","type":"transaction","entry":[` + strings.Join([]string{
				entry(patient("p2")),
				entry(mr("a", "p2", "active", "1049621", "oxycodone 5 MG", 1, 4)),
				entry(mr("b", "p2", "active", "1049621", "oxycodone 5 MG", 1, 4)),
			}, ",") + `]}`
			s.do(t, "POST", "/fhir", bundle).Expect(t, 200)
			id, _ := opioidsafety.IssueIDs("p2")
			is, ok := readIssue(t, s, id)
			if !ok || is.severity != "high" || len(is.implicated) != 2 { // 45 + 45 = 90
				t.Fatalf("after one transaction of two requests of %v: %+v %v", oxy45, is, ok)
			}
			for _, r := range []string{"a", "b"} {
				res := s.do(t, "GET", "/fhir/MedicationRequest/"+r, "").Expect(t, 200).JSON(t)
				if _, tot, _ := mmeExt(t, res); !near(tot, 2*oxy45) {
					t.Errorf("%s records total %v, want %v", r, tot, 2*oxy45)
				}
			}
		})
	}
}

func TestMMEOperation(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.Name, func(t *testing.T) {
			b := be.Open(t)
			s := start(t, b, nil)
			for _, p := range []string{"p1", "p2"} {
				s.do(t, "PUT", "/fhir/Patient/"+p, patient(p)).Expect(t, 201)
			}
			s.do(t, "PUT", "/fhir/MedicationRequest/mr1", mr("mr1", "p1", "active", "1049621", "oxycodone 5 MG", 1, 4)).Expect(t, 201)
			s.do(t, "PUT", "/fhir/MedicationRequest/mr2", mr("mr2", "p1", "active", "835603", "tramadol 50 MG", 1, 6)).Expect(t, 201)
			s.do(t, "PUT", "/fhir/MedicationRequest/old", mr("old", "p1", "completed", "835603", "tramadol 50 MG", 2, 6)).Expect(t, 201)
			s.do(t, "PUT", "/fhir/MedicationRequest/unk", mr("unk", "p1", "active", "999999999", "oxycodone 7.5 MG tablet", 1, 4)).Expect(t, 201)
			s.do(t, "PUT", "/fhir/MedicationRequest/bup", mr("bup", "p1", "active", "351265", "buprenorphine 8 MG", 1, 24)).Expect(t, 201)
			s.do(t, "PUT", "/fhir/MedicationRequest/other", mr("other", "p2", "active", "1049621", "oxycodone 5 MG", 2, 4)).Expect(t, 201)

			p := s.do(t, "GET", "/fhir/Patient/p1/$mme", "").Expect(t, 200).JSON(t)
			if p["resourceType"] != "Parameters" {
				t.Fatalf("not Parameters: %v", p)
			}
			var total float64
			contributors := map[string]float64{}
			var reasons []string
			for _, x := range get(p, "parameter").([]any) {
				switch get(x, "name") {
				case "total":
					total = num(t, get(x, "valueDecimal"))
				case "contributor":
					var ref string
					var mme float64
					for _, part := range get(x, "part").([]any) {
						switch get(part, "name") {
						case "medicationRequest":
							ref = get(part, "valueReference", "reference").(string)
						case "mme":
							mme = num(t, get(part, "valueDecimal"))
						}
					}
					contributors[ref] = mme
				case "notComputed":
					reasons = append(reasons, fmt.Sprint(get(x, "part")))
				}
			}
			if !near(total, oxy45+tramadol40) {
				t.Errorf("total %v, want %v", total, oxy45+tramadol40)
			}
			want := map[string]float64{"MedicationRequest/mr1": oxy45, "MedicationRequest/mr2": tramadol40, "MedicationRequest/bup": 0}
			if fmt.Sprint(contributors) != fmt.Sprint(want) {
				t.Errorf("contributors %v, want %v", contributors, want)
			}
			if len(reasons) != 1 || !strings.Contains(reasons[0], "MedicationRequest/unk") || !strings.Contains(reasons[0], "not in the opioid table") {
				t.Errorf("notComputed %v", reasons)
			}

			// Published and declared.
			od := s.do(t, "GET", "/fhir/OperationDefinition/"+opioidsafety.OperationDefinitionID, "").Expect(t, 200).JSON(t)
			if od["resourceType"] != "OperationDefinition" || od["code"] != "mme" {
				t.Fatalf("OperationDefinition: %v", od)
			}
			cs := s.do(t, "GET", "/fhir/metadata", "").Expect(t, 200).JSON(t)
			declared := false
			for _, r := range get(cs, "rest", 0, "resource").([]any) {
				if get(r, "type") != "Patient" {
					continue
				}
				for _, op := range get(r, "operation").([]any) {
					if get(op, "name") == "mme" && get(op, "definition") == od["url"] {
						declared = true
					}
				}
			}
			if !declared {
				t.Error("$mme is not declared on Patient in the CapabilityStatement")
			}
			s.do(t, "GET", "/fhir/Patient/nobody/$mme", "").Expect(t, 404)
			s.do(t, "GET", "/fhir/Patient/p1/$mme?foo=1", "").Expect(t, 400)

			// Authorization through the decision point: patient p2's own
			// token sees only p2; without MedicationRequest read, nothing.
			p2 := start(t, b, &auth.Principal{Patient: "p2", Scopes: auth.ParseScopes("patient/Patient.rs patient/MedicationRequest.rs patient/Medication.rs")})
			p2.do(t, "GET", "/fhir/Patient/p1/$mme", "").Expect(t, 403)
			got := p2.do(t, "GET", "/fhir/Patient/p2/$mme", "").Expect(t, 200).JSON(t)
			if v := num(t, get(got, "parameter", 0, "valueDecimal")); !near(v, 2*oxy45) {
				t.Errorf("p2 total %v, want %v", v, 2*oxy45)
			}
			noMR := start(t, b, &auth.Principal{Patient: "p2", Scopes: auth.ParseScopes("patient/Patient.rs")})
			noMR.do(t, "GET", "/fhir/Patient/p2/$mme", "").Expect(t, 403)
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
