package subscription

import "testing"

// FuzzParse feeds arbitrary JSON to the Subscription and event parsers:
// errors are fine, panics are not.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"resourceType":"Subscription","status":"requested","criteria":"Observation?code=1","channel":{"type":"rest-hook","endpoint":"https://x","header":["A: b"],"_payload":{"extension":[{"url":"` + payloadContentURL + `","valueCode":"id-only"}]}}}`))
	f.Add([]byte(`{"criteria":"http://anodyne-fhir.org/fhir/SubscriptionTopic/pain-score","_criteria":{"extension":[{"url":"` + filterCriteriaURL + `","valueString":"Observation?patient=1"}]},"end":"2020","channel":{}}`))
	f.Add([]byte(`{"extension":[{"url":"` + ownerURL + `","extension":[{"url":"client","valueString":1}]}],"channel":{"extension":"x"}}`))
	f.Add([]byte(`{"v":1,"type":"A","id":"b","version":2}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		if res, err := decode(raw); err == nil && res != nil {
			if sb, err := parseSub(res, 1); err == nil {
				_ = sb.ended(sb.End)
			}
			_ = ownerOf(res)
		}
		_, _ = decodeEvent(raw)
		_, _ = endpoints{}.checkURL(string(raw))
	})
}
