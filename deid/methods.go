package deid

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"math"
	"strconv"
	"strings"
	"time"
)

// method applies a rule to property key of m (its whole value: a scalar,
// an object or an array), skipping what earlier rules decided inside it.
func (r *run) method(ru *rule, m map[string]any, key string) error {
	switch ru.spec.Method {
	case "keep":
		return nil
	case "redact":
		if !r.redactValue(m[key]) {
			delete(m, key)
			delete(m, "_"+key)
		}
	case "substitute":
		m[key] = cloneJSON(ru.spec.Params["value"])
		delete(m, "_"+key)
	case "cryptoHash":
		m[key] = r.mapStrings(m[key], func(s string) string { return r.hashString(m, key, s) })
	case "dateShift":
		if maxAge, ok := number(ru.spec.Params["maxAge"]); ok {
			if s, isStr := m[key].(string); isStr && r.olderThan(s, maxAge) {
				r.ageBand(m, key)
				r.mark("redact")
				return nil
			}
		}
		m[key] = r.mapStrings(m[key], r.shiftDate)
	case "generalize":
		return r.generalizeField(ru, m, key)
	case "perturb":
		m[key] = r.perturbValue(ru, m[key])
	}
	r.mark(ru.spec.Method)
	return nil
}

// methodMap applies a rule to one selected object in place.
func (r *run) methodMap(ru *rule, m map[string]any) error {
	switch ru.spec.Method {
	case "keep":
		return nil
	case "redact":
		r.redactChildren(m)
	case "substitute":
		v, ok := ru.spec.Params["value"].(map[string]any)
		if !ok {
			return fmt.Errorf("substitute of an object needs an object params.value")
		}
		clear(m)
		for k, val := range v {
			m[k] = cloneJSON(val)
		}
	case "cryptoHash":
		for k, v := range m {
			if !r.fieldDecided(m, k) {
				m[k] = r.mapStrings(v, func(s string) string { return r.hashString(m, k, s) })
			}
		}
	case "dateShift":
		for k, v := range m {
			if !r.fieldDecided(m, k) {
				m[k] = r.mapStrings(v, r.shiftDate)
			}
		}
	case "generalize":
		if ru.to != "ageBand" {
			return fmt.Errorf("generalize %q applies to an element, not an object: end the path with its name", ru.to)
		}
		r.ageBandQuantity(m)
	case "perturb":
		r.perturbValue(ru, m)
	}
	r.mark(ru.spec.Method)
	return nil
}

// redactValue removes every part of v no earlier rule decided and
// reports whether anything is left.
func (r *run) redactValue(v any) bool {
	switch x := v.(type) {
	case map[string]any:
		if r.decidedMap[ptr(x)] {
			return true
		}
		return r.redactChildren(x)
	case []any:
		kept := false
		for i, val := range x {
			if r.redactValue(val) {
				kept = true
			} else {
				x[i] = nil
			}
		}
		return kept
	}
	return false
}

// redactChildren removes the undecided properties of m and reports
// whether any property is left.
func (r *run) redactChildren(m map[string]any) bool {
	kept := false
	for k, val := range m {
		if r.decidedField[fieldKey{ptr(m), k}] || r.redactValue(val) {
			kept = true
			continue
		}
		delete(m, k)
		delete(m, "_"+k)
	}
	return kept
}

// mapStrings replaces every string in v (not inside decided objects).
func (r *run) mapStrings(v any, fn func(string) string) any {
	switch x := v.(type) {
	case string:
		return fn(x)
	case []any:
		for i, val := range x {
			x[i] = r.mapStrings(val, fn)
		}
	case map[string]any:
		if r.decidedMap[ptr(x)] {
			return x
		}
		for k, val := range x {
			if !r.decidedField[fieldKey{ptr(x), k}] {
				x[k] = r.mapStrings(val, fn)
			}
		}
	}
	return v
}

// hashString pseudonymizes one string: a resource id with its type, a
// reference keeping its type (contained "#x" references are kept), and
// anything else as a keyed HMAC.
func (r *run) hashString(m map[string]any, key, s string) string {
	switch {
	case key == "id" && m["resourceType"] != nil:
		typ, _ := m["resourceType"].(string)
		p := pseudonym(r.mac, typ, s)
		r.result.Pseudonyms[typ+"/"+p] = typ + "/" + s
		return p
	case key == "reference":
		if strings.HasPrefix(s, "#") {
			return s
		}
		if strings.HasPrefix(s, "urn:") {
			return "urn:uuid:" + hashHex(r.mac, s)
		}
		tail := refTail(s)
		typ, id, ok := strings.Cut(tail, "/")
		if !ok {
			return hashHex(r.mac, s)
		}
		p := pseudonym(r.mac, typ, id)
		r.result.Pseudonyms[typ+"/"+p] = tail
		return typ + "/" + p
	}
	return hashHex(r.mac, s)
}

// hashHex is the keyed hash of a value, with the key's HMAC set up.
func hashHex(mac hash.Hash, s string) string {
	mac.Reset()
	mac.Write([]byte("value\x00" + s))
	var sum [sha256.Size]byte
	return hex.EncodeToString(mac.Sum(sum[:0])[:16])
}

// dateLayouts are the FHIR date, dateTime and instant forms, with the
// precision each keeps.
var dateLayouts = []string{"2006-01-02T15:04:05.999999999Z07:00", "2006-01-02T15:04:05Z07:00", "2006-01-02T15:04Z07:00", "2006-01-02", "2006-01"}

// shiftDate moves a date by the patient's offset in whole days, keeping
// its precision, time of day and zone; a year alone stays (Safe Harbor
// allows the year). Other strings pass unchanged.
func (r *run) shiftDate(s string) string {
	for _, l := range dateLayouts {
		t, err := time.Parse(l, s)
		if err != nil {
			continue
		}
		out := t.AddDate(0, 0, r.shift)
		if l == "2006-01" {
			// Month precision: shift the middle of the month.
			out = t.AddDate(0, 0, 14+r.shift)
		}
		if strings.Contains(l, ".999") {
			// Keep the number of fractional digits written.
			if dot := strings.IndexByte(s, '.'); dot > 0 {
				end := dot + 1
				for end < len(s) && s[end] >= '0' && s[end] <= '9' {
					end++
				}
				return out.Format("2006-01-02T15:04:05." + strings.Repeat("0", end-dot-1) + "Z07:00")
			}
			return out.Format(time.RFC3339)
		}
		return out.Format(l)
	}
	return s
}

// olderThan reports whether a birth date implies an age over maxAge today.
func (r *run) olderThan(birth string, maxAge float64) bool {
	year, err := strconv.Atoi(birth[:min(4, len(birth))])
	if err != nil {
		return false
	}
	now := r.d.now()
	born := time.Date(year, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, l := range dateLayouts {
		if t, err := time.Parse(l, birth); err == nil {
			born = t
			break
		}
	}
	return born.AddDate(int(maxAge)+1, 0, 0).Before(now) || born.AddDate(int(maxAge)+1, 0, 0).Equal(now)
}

// ageBand replaces a primitive with the "90 or older" band.
func (r *run) ageBand(m map[string]any, key string) {
	delete(m, key)
	m["_"+key] = map[string]any{"extension": []any{
		map[string]any{"url": AgeBandExtension, "valueString": "90 or older"},
	}}
}

// ageBandQuantity caps an Age at 90: ">= 90 a".
func (r *run) ageBandQuantity(m map[string]any) {
	v, ok := number(m["value"])
	if !ok {
		return
	}
	years := v
	switch m["code"] {
	case "mo":
		years = v / 12
	case "wk":
		years = v / 52
	case "d":
		years = v / 365
	}
	if years > 89 {
		m["value"] = json.Number("90")
		m["comparator"] = ">="
		m["unit"] = "years"
		m["system"] = "http://unitsofmeasure.org"
		m["code"] = "a"
	}
}

func (r *run) generalizeField(ru *rule, m map[string]any, key string) error {
	switch ru.to {
	case "zip3":
		m[key] = r.mapStrings(m[key], func(s string) string {
			digits := strings.TrimSpace(s)
			if len(digits) < 3 || strings.Trim(digits[:3], "0123456789") != "" {
				return ""
			}
			if r.d.restricted[digits[:3]] {
				return "000"
			}
			return digits[:3]
		})
	case "year":
		m[key] = r.mapStrings(m[key], func(s string) string {
			if len(s) >= 4 && strings.Trim(s[:4], "0123456789") == "" {
				return s[:4]
			}
			return s
		})
	case "ageBand":
		each(m[key], func(x any) {
			if q, ok := x.(map[string]any); ok {
				r.ageBandQuantity(q)
			}
		})
	}
	r.mark("generalize")
	return nil
}

// perturbValue adds uniform noise in [-span, span] (proportional: span
// times the value) to the numbers of v, rounded to roundTo decimals. In a
// Quantity only "value" is a measurement.
func (r *run) perturbValue(ru *rule, v any) any {
	span, _ := number(ru.spec.Params["span"])
	roundTo, _ := number(ru.spec.Params["roundTo"])
	prop := ru.spec.Params["kind"] == "proportional"
	noise := func(x float64) json.Number {
		s := span
		if prop {
			s = math.Abs(x) * span
		}
		var b [8]byte
		_, _ = rand.Read(b[:])
		u := float64(binary.BigEndian.Uint64(b[:])>>11) / (1 << 53)
		y := x + (2*u-1)*s
		p := math.Pow(10, roundTo)
		y = math.Round(y*p) / p
		return json.Number(strconv.FormatFloat(y, 'f', int(roundTo), 64))
	}
	switch x := v.(type) {
	case json.Number:
		if f, err := x.Float64(); err == nil {
			return noise(f)
		}
	case map[string]any:
		if f, ok := number(x["value"]); ok {
			x["value"] = noise(f)
		}
	case []any:
		for i, e := range x {
			x[i] = r.perturbValue(ru, e)
		}
	}
	return v
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case float64:
		return x, true
	case int:
		return float64(x), true
	}
	return 0, false
}

func cloneJSON(v any) any {
	raw, _ := json.Marshal(v)
	var out any
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	_ = dec.Decode(&out)
	return out
}
