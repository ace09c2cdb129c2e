package cdshooks

import (
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"
)

// FuzzDecodeRequest: any body is either a request or a *callError (the
// client's 400), never a panic; what it accepts has the fields the
// service relies on.
func FuzzDecodeRequest(f *testing.F) {
	for _, name := range []string{"testdata/order-sign.json", "testdata/order-select.json"} {
		raw, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Add([]byte(`{"hook":"order-sign","hookInstance":"x","context":{"patientId":"p","draftOrders":{"resourceType":"Bundle","entry":7}}}`))
	f.Add([]byte(`{"hook":"order-select","hookInstance":"x","context":{"patientId":"p","selections":[1],"draftOrders":{"resourceType":"Bundle"}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, oc, err := decodeRequest(body, []string{HookOrderSelect, HookOrderSign})
		if err != nil {
			var ce *callError
			if !errors.As(err, &ce) || ce.Status != 400 {
				t.Fatalf("error %v is not a 400", err)
			}
			return
		}
		if req.HookInstance == "" || oc.PatientID == "" || oc.Drafts == nil || (req.Hook == HookOrderSelect && len(oc.Selections) == 0) {
			t.Fatalf("accepted an incomplete request: %+v %+v", req, oc)
		}
		// What the service does next with it must not panic either.
		drafts(oc)
		for key := range req.Prefetch {
			req.prefetched(key)
		}
	})
}

// FuzzDecodeFeedback: any feedback body is either a list of items the
// service can store or a 400, never a panic.
func FuzzDecodeFeedback(f *testing.F) {
	f.Add([]byte(`{"feedback":[{"card":"c","outcome":"accepted","acceptedSuggestions":[{"id":"s"}],"outcomeTimestamp":"2026-12-07T12:00:00Z"}]}`))
	f.Add([]byte(`{"feedback":[{"card":"c","outcome":"overridden","overrideReason":{"reason":{"code":"x"},"userComment":"y"},"outcomeTimestamp":"2026-12-07T12:00:00.5+01:00"}]}`))
	f.Add([]byte(`{"feedback":[{"card":"","outcome":"accepted"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		items, err := decodeFeedback(body)
		if err != nil {
			var ce *callError
			if !errors.As(err, &ce) || ce.Status != 400 {
				t.Fatalf("error %v is not a 400", err)
			}
			return
		}
		s := &Service{cfg: Config{Now: time.Now}, base: "https://cds.example/cds-services"}
		for _, it := range items {
			if it.Card == "" || (it.Outcome == "accepted") == (len(it.AcceptedSuggestions) == 0) {
				t.Fatalf("accepted an item without a card or with suggestions that do not fit its outcome: %+v", it)
			}
			ev := s.feedbackEvent(it, &cardRecord{V: 1, Patient: "p", Service: ServiceID})
			if _, err := json.Marshal(ev); err != nil {
				t.Fatalf("event not encodable: %v", err)
			}
		}
	})
}
