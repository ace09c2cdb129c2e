package research_test

import (
	"net/url"
	"strings"
	"testing"
)

// identity is every value of the seeded Patient p1 and Observations o1,
// o2 that Safe Harbor hides (names, identifiers, contact details,
// address below ZIP3, exact dates, free text) and every stored id.
var identity = []string{
	"Quixotewell", `"Ana"`, "Ana Quixotewell", "555-0100", "12 Elm St", "Newton", "02459", "1970-04-02",
	"knee hurts", "Pain severity", `"p1"`, "Patient/p1", `"o1"`, `"o2"`, "Observation/o1", "Observation/o2",
	"2024-03-10T08:15:00Z", "2024-03-12T20:45:00Z",
}

// testNoIdentityLeaves reads the seeded data by every read path a client
// has (read, vread, the three histories, search with _include and
// _revinclude, compartment, $everything, batch entries, $stats sources)
// and fails if any answer holds an identifying value or a stored id.
func testNoIdentityLeaves(t *testing.T, e *env, who, patient string) {
	t.Helper()
	obs := "/Observation?subject=" + url.QueryEscape("Patient/"+patient)
	paths := []string{
		"/Patient/" + patient,
		"/Patient/" + patient + "/_history",
		"/Patient/" + patient + "/_history/1",
		"/Patient/_history",
		"/Observation/_history",
		"/_history",
		obs + "&_include=Observation:subject",
		"/Patient?_id=" + patient + "&_revinclude=Observation:subject",
		"/Patient/" + patient + "/Observation",
		"/Patient/" + patient + "/$everything",
		"/Observation/$stats?coding=" + url.QueryEscape("http://loinc.org|72514-3") + "&statistic=count,average&include=true",
		"?_type=Patient,Observation",
		"/Observation/$lastn?max=1&code=" + url.QueryEscape("http://loinc.org|72514-3") + "&subject=" + url.QueryEscape("Patient/"+patient) + "&_include=Observation:subject",
	}
	var (
		st  int
		raw []byte
	)
	for _, p := range paths {
		st, raw, _ = e.raw(who, "GET", p, "")
		if st != 200 {
			t.Errorf("%s %s: %d %s", who, p, st, raw)
			continue
		}
		leaks(t, p, string(raw), 1)
	}
	// $lastn by pseudonym: the newest reading (o2, value 4), de-identified.
	st, b := e.do(who, "GET", "/Observation/$lastn?max=1&code="+url.QueryEscape("http://loinc.org|72514-3")+"&subject="+url.QueryEscape("Patient/"+patient), "")
	if es := entries(b); st != 200 || len(es) != 1 || mustString(es[0]["valueQuantity"].(map[string]any)["value"]) != "4" || es[0]["id"] == "o2" {
		t.Errorf("research $lastn: %d %v", st, b)
	}
	// A batch of reads: every entry passes the de-identifier.
	batch := `{"resourceType":"Bundle","type":"batch","entry":[
 {"request":{"method":"GET","url":"Patient/` + patient + `"}},
 {"request":{"method":"GET","url":"Observation?subject=Patient/` + patient + `&_include=Observation:subject"}},
 {"request":{"method":"GET","url":"Patient/` + patient + `/_history"}},
 {"request":{"method":"GET","url":"Patient/` + patient + `/$everything"}},
 {"request":{"method":"GET","url":"Observation/_history"}}]}`
	st, raw, _ = e.raw(who, "POST", "", batch)
	if st != 200 {
		t.Fatalf("research batch: %d %s", st, raw)
	}
	leaks(t, "batch", string(raw), 1)
	// The batch's entries found what a search finds, and the stored id
	// found nothing.
	if n := strings.Count(string(raw), `"status":"200`); n != 5 {
		t.Errorf("batch answered %d entries with 200, want 5: %s", n, raw)
	}
	// A stored id in a batch entry names nothing (the 404 echoes only
	// what the caller wrote).
	_, raw, _ = e.raw(who, "POST", "", `{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Patient/p1"}},{"request":{"method":"GET","url":"Observation?subject=Patient/p1"}}]}`)
	if !strings.Contains(string(raw), `"status":"404`) || strings.Contains(string(raw), "Quixotewell") || strings.Count(string(raw), `"resourceType":"Observation"`) != 0 {
		t.Errorf("batch by stored ids: %s", raw)
	}
	// A transaction is a write: refused whole.
	if st, raw, _ := e.raw(who, "POST", "", `{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"GET","url":"Patient/`+patient+`"}}]}`); st == 200 {
		leaks(t, "transaction", string(raw), 1)
	}
}

// leaks fails for every identifying value in raw; at least atLeast resources
// must be in it (an empty answer proves nothing).
func leaks(t *testing.T, what, raw string, atLeast int) {
	t.Helper()
	if strings.Count(raw, `"resourceType"`) < atLeast {
		t.Errorf("%s: the answer holds no resource: %s", what, raw)
	}
	for _, v := range identity {
		if i := strings.Index(raw, v); i >= 0 {
			t.Errorf("%s: the research answer contains %s: …%s…", what, v, raw[max(0, i-200):min(len(raw), i+100)])
		}
	}
}
