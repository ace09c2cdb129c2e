package cdshooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/anodyne-fhir/anodyne/clinical/opioid"
	"github.com/anodyne-fhir/anodyne/fhir"
)

// Bounds of what one call fetches from a remote FHIR server.
const (
	maxPages      = 20
	maxFetchBytes = 16 << 20
	maxMedReads   = 50
)

// patientData is the patient's active MedicationRequests and a resolver
// of the Medications they reference, however obtained.
type patientData struct {
	requests []map[string]any
	resolve  opioid.Resolver
	source   string // "prefetch", "fhirServer" or "this server", for logs and audit
}

// resolverOf resolves references among resources already at hand
// (included Medications, prefetch entries, draft Bundle entries), then
// through next.
func resolverOf(have []map[string]any, next opioid.Resolver) opioid.Resolver {
	byRef := map[string]map[string]any{}
	for _, r := range have {
		typ, _ := r["resourceType"].(string)
		id, _ := r["id"].(string)
		if typ != "" && id != "" {
			byRef[typ+"/"+id] = r
		}
	}
	return func(ref string) (map[string]any, error) {
		if r, ok := byRef[localRef(ref)]; ok {
			return r, nil
		}
		if next == nil {
			return nil, nil
		}
		return next(ref)
	}
}

// localRef strips a server base and a version from a reference.
func localRef(ref string) string {
	parts := strings.Split(strings.TrimRight(ref, "/"), "/")
	if n := len(parts); n >= 4 && parts[n-2] == "_history" {
		parts = parts[:n-2]
	}
	if n := len(parts); n >= 2 {
		return parts[n-2] + "/" + parts[n-1]
	}
	return ref
}

// activeFor keeps the active MedicationRequests of patient.
func activeFor(resources []map[string]any, patient string) []map[string]any {
	var out []map[string]any
	for _, r := range resources {
		if r["resourceType"] != "MedicationRequest" || !opioid.Active(r) {
			continue
		}
		subj, _ := r["subject"].(map[string]any)
		ref, _ := subj["reference"].(string)
		if localRef(ref) != "Patient/"+patient {
			continue
		}
		out = append(out, r)
	}
	return out
}

// fetchSelf reads the patient's requests from this server as the caller
// the hook's access token names: fhir.PatientReader applies the one
// authorization decision to every read.
func (s *Service) fetchSelf(ctx context.Context, req *Request, patient, client string) (_ *patientData, err error) {
	defer func() { s.audit(ctx, req, patient, client, err) }()
	if s.cfg.FHIR == nil {
		return nil, preconditionFailed("this server's FHIR API is not available to the CDS service")
	}
	if s.cfg.SelfAuth != nil && req.FHIRAuthorization == nil {
		// checkSelfAuthorization verified a token when there was one.
		return nil, preconditionFailed("medications were not prefetched and the request carries no fhirAuthorization for %s", req.FHIRServer)
	}
	r, err := s.cfg.FHIR.PatientReader(ctx, patient)
	if err != nil {
		return nil, fetchRefused(req.FHIRServer, err)
	}
	list, err := r.Search(ctx, "MedicationRequest", url.Values{"status": {"active"}})
	if err != nil {
		return nil, fetchRefused(req.FHIRServer, err)
	}
	return &patientData{
		requests: list,
		resolve:  func(ref string) (map[string]any, error) { return r.Read(ctx, ref) },
		source:   "this server",
	}, nil
}

// fetchRefused turns this server's refusal into the CDS answer: the
// client's token does not reach the data, so the service cannot compute
// without a prefetch (412); other failures are the service's own.
func fetchRefused(server string, err error) error {
	var fe *fhir.Error
	if errors.As(err, &fe) && fe.Status < 500 {
		return preconditionFailed("medications were not prefetched and %s refused to read them with fhirAuthorization: %s", server, fe.Error())
	}
	return err
}

// fetchRemote reads the patient's active requests (with the Medications
// they reference) from fhirServer over HTTP with the hook's token.
func (s *Service) fetchRemote(ctx context.Context, req *Request, patient string) (*patientData, error) {
	base := strings.TrimRight(req.FHIRServer, "/")
	baseURL, _ := url.Parse(base)
	token := ""
	if req.FHIRAuthorization != nil {
		token = req.FHIRAuthorization.AccessToken
	}
	get := func(u string) (map[string]any, int, error) {
		hr, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, 0, err
		}
		hr.Header.Set("Accept", "application/fhir+json")
		if token != "" {
			hr.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := s.http.Do(hr)
		if err != nil {
			return nil, 0, err
		}
		defer res.Body.Close()
		raw, err := io.ReadAll(io.LimitReader(res.Body, maxFetchBytes+1))
		if err != nil {
			return nil, res.StatusCode, err
		}
		if len(raw) > maxFetchBytes {
			return nil, res.StatusCode, fmt.Errorf("answer larger than %d bytes", maxFetchBytes)
		}
		if res.StatusCode != http.StatusOK {
			return nil, res.StatusCode, nil
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			return nil, res.StatusCode, fmt.Errorf("not JSON: %w", err)
		}
		return m, res.StatusCode, nil
	}
	// The Patient first: a search the token may not make for this patient
	// can answer with an empty page rather than a refusal (a token scoped
	// to another patient), which would silently leave out every active
	// prescription.
	if _, status, err := get(base + "/Patient/" + url.PathEscape(patient)); err != nil || status != http.StatusOK {
		if err != nil {
			return nil, preconditionFailed("medications were not prefetched and reading Patient/%s from %s failed: %v", patient, base, err)
		}
		return nil, preconditionFailed("medications were not prefetched and %s answered %d to reading Patient/%s with fhirAuthorization", base, status, patient)
	}
	q := url.Values{"patient": {patient}, "status": {"active"}, "_include": {"MedicationRequest:medication"}, "_count": {"200"}}
	next := base + "/MedicationRequest?" + q.Encode()
	var all []map[string]any
	for page := 0; next != ""; page++ {
		if page == maxPages {
			return nil, preconditionFailed("the patient's MedicationRequests at %s span more than %d pages: prefetch them", base, maxPages)
		}
		b, status, err := get(next)
		if err != nil {
			return nil, preconditionFailed("medications were not prefetched and fetching them from %s failed: %v", base, err)
		}
		if status != http.StatusOK || b["resourceType"] != "Bundle" {
			return nil, preconditionFailed("medications were not prefetched and %s answered %d to the search with fhirAuthorization", base, status)
		}
		all = append(all, bundleResources(b)...)
		next = ""
		links, _ := b["link"].([]any)
		for _, l := range links {
			lm, _ := l.(map[string]any)
			if lm["relation"] == "next" {
				u, _ := lm["url"].(string)
				// The token goes only where the client sent it.
				if pu, err := url.Parse(u); err == nil && pu.Scheme == baseURL.Scheme && pu.Host == baseURL.Host {
					next = u
				}
			}
		}
	}
	reads := 0
	fetch := func(ref string) (map[string]any, error) {
		ref = localRef(ref)
		typ, id, ok := strings.Cut(ref, "/")
		if !ok || typ != "Medication" || id == "" || strings.ContainsAny(id, "?#") {
			return nil, nil
		}
		if reads++; reads > maxMedReads {
			return nil, fmt.Errorf("more than %d Medication reads", maxMedReads)
		}
		m, status, err := get(base + "/Medication/" + url.PathEscape(id))
		if err != nil {
			return nil, err
		}
		if status != http.StatusOK {
			return nil, nil
		}
		return m, nil
	}
	return &patientData{requests: activeFor(all, patient), resolve: resolverOf(all, fetch), source: "fhirServer"}, nil
}
