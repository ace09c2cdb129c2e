package deid

import (
	"encoding/json"
	"strings"
	"testing"
)

// safeHarborValues collects, by walking the original JSON independently
// of the rules, the values that stood in Safe Harbor elements: names,
// street lines, cities, full postal codes, telecom values, identifier
// values, ids (resource ids and urn:uuid full URLs), birth dates, exact
// times and narrative.
func safeHarborValues(res map[string]any) []string {
	var out []string
	add := func(v any) {
		each(v, func(x any) {
			if s, ok := x.(string); ok && len(s) >= 4 {
				out = append(out, s)
			}
		})
	}
	var walk func(key string, v any)
	walk = func(key string, v any) {
		switch x := v.(type) {
		case map[string]any:
			switch key {
			case "name":
				add(x["family"])
				add(x["given"])
				add(x["text"])
			case "address", "valueAddress":
				add(x["line"])
				add(x["city"])
				add(x["postalCode"])
			case "telecom":
				add(x["value"])
			case "identifier":
				add(x["value"])
			case "text":
				add(x["div"])
			}
			for k, val := range x {
				walk(k, val)
			}
		case []any:
			for _, val := range x {
				walk(key, val)
			}
		case string:
			if key == "birthDate" || strings.Contains(x, "T") && len(x) >= 19 && x[4] == '-' && x[10] == 'T' {
				add(x)
			}
			if key == "reference" && strings.HasPrefix(x, "urn:uuid:") {
				add(strings.TrimPrefix(x, "urn:uuid:"))
			}
		}
	}
	walk("", res)
	// The resource's own id; ids of contained resources are local names
	// ("#referral") that identify nothing.
	add(res["id"])
	return out
}

// loincAndNumbers are what pain research needs, exactly: every LOINC code
// and every numeric Observation value (value[x] and components).
func loincAndNumbers(res map[string]any) (codes, numbers []string) {
	var walk func(key string, v any)
	walk = func(key string, v any) {
		switch x := v.(type) {
		case map[string]any:
			if x["system"] == "http://loinc.org" {
				if c, ok := x["code"].(string); ok {
					codes = append(codes, c)
				}
			}
			if key == "valueQuantity" {
				if n, ok := x["value"].(json.Number); ok {
					numbers = append(numbers, n.String())
				}
			}
			for k, val := range x {
				walk(k, val)
			}
		case []any:
			for _, val := range x {
				walk(key, val)
			}
		}
	}
	walk("", res)
	return codes, numbers
}

// TestSafeHarborOnSynthea: after the default rules, no Safe Harbor value of
// the original appears anywhere in the output, while every LOINC code and
// every numeric Observation value is still there, exactly.
func TestSafeHarborOnSynthea(t *testing.T) {
	d, err := New(DefaultRules())
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, res := range syntheaResources(t) {
		orig, _ := json.Marshal(res)
		hidden := safeHarborValues(res)
		codes, numbers := loincAndNumbers(res)
		var copyRes map[string]any
		dec := json.NewDecoder(strings.NewReader(string(orig)))
		dec.UseNumber()
		if err := dec.Decode(&copyRes); err != nil {
			t.Fatal(err)
		}
		out, _, err := d.Apply(copyRes, key)
		if err != nil {
			t.Fatalf("%s: %v", res["resourceType"], err)
		}
		raw, _ := json.Marshal(out)
		got := string(raw)
		for _, h := range hidden {
			if strings.Contains(got, h) {
				t.Errorf("%s/%s: Safe Harbor value %q survived", res["resourceType"], res["id"], h)
			}
		}
		outCodes, outNumbers := loincAndNumbers(out)
		if strings.Join(outCodes, ",") != strings.Join(codes, ",") && len(outCodes) != len(codes) {
			t.Errorf("%s/%s: LOINC codes %v became %v", res["resourceType"], res["id"], codes, outCodes)
		}
		for _, c := range codes {
			if !strings.Contains(got, `"code":"`+c+`"`) {
				t.Errorf("%s/%s: LOINC code %s lost", res["resourceType"], res["id"], c)
			}
		}
		for _, n := range numbers {
			if !strings.Contains(got, `"value":`+n) {
				t.Errorf("%s/%s: numeric value %s lost", res["resourceType"], res["id"], n)
			}
		}
		if len(outNumbers) != len(numbers) {
			t.Errorf("%s/%s: %d numeric values became %d", res["resourceType"], res["id"], len(numbers), len(outNumbers))
		}
		checked += len(hidden)
	}
	if checked < 100 {
		t.Fatalf("only %d Safe Harbor values found in the samples: the test would prove nothing", checked)
	}
}
