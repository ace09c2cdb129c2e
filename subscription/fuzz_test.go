package subscription

import (
	"context"
	"testing"
)

// FuzzParse feeds arbitrary JSON to the Subscription and event parsers:
// errors are fine, panics are not.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"resourceType":"Subscription","status":"requested","criteria":"Observation?code=1","channel":{"type":"rest-hook","endpoint":"https://x","header":["A: b"],"_payload":{"extension":[{"url":"` + payloadContentURL + `","valueCode":"id-only"}]}}}`))
	f.Add([]byte(`{"criteria":"http://anodyne-fhir.org/fhir/SubscriptionTopic/pain-score","_criteria":{"extension":[{"url":"` + filterCriteriaURL + `","valueString":"Observation?patient=1"}]},"end":"2020","channel":{}}`))
	f.Add([]byte(`{"extension":[{"url":"` + ownerURL + `","extension":[{"url":"client","valueString":1}]}],"channel":{"extension":"x"}}`))
	f.Add([]byte(`{"v":1,"type":"A","id":"b","version":2}`))
	f.Add([]byte(`{"channel":{"header":["Authorization: [masked]","X: y"],"extension":[{"url":"` + heartbeatURL + `","valueUnsignedInt":5},{"url":"` + secretURL + `","valueString":"[masked]"}]},"meta":{"tag":[{"system":"` + patientTagSystem + `","code":"p1"}]}}`))
	f.Add([]byte(`{"v":1,"kind":"handshake"}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		if res, err := decode(raw); err == nil && res != nil {
			if sb, err := parseSub(res, 1); err == nil {
				_ = sb.ended(sb.End)
			}
			_ = ownerOf(res)
			_ = patientTagOf(res)
			prev, _ := parseSub(res, 1)
			_ = unmask(res, prev)
			setPatientTag(res, "p1")
			_ = (&Service{}).Redact(context.Background(), res)
		}
		_, _ = decodeLogEntry(raw)
		_, _ = decodeEvent(raw)
		_, _ = endpoints{}.checkURL(string(raw))
	})
}
