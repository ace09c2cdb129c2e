package cdshooks

import (
	"errors"
	"os"
	"testing"
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
