package fhir

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	jsonpatch "github.com/evanphx/json-patch/v5"

	"github.com/anodyne-fhir/anodyne/conformance"
)

// A posted batch or transaction Bundle: reading its entries (request
// method and url, resource, conditional headers) and building its
// response entries. Running a transaction is transaction.go, a batch
// batch.go.

// bundleRequest is the part of a posted Bundle the engine reads; resources
// stay raw so that each is validated exactly once, by the validator.
type bundleRequest struct {
	ResourceType string `json:"resourceType"`
	Type         string `json:"type"`
	Entry        []struct {
		FullURL  string          `json:"fullUrl"`
		Resource json.RawMessage `json:"resource"`
		Request  *struct {
			Method          string `json:"method"`
			URL             string `json:"url"`
			IfNoneMatch     string `json:"ifNoneMatch"`
			IfModifiedSince string `json:"ifModifiedSince"`
			IfMatch         string `json:"ifMatch"`
			IfNoneExist     string `json:"ifNoneExist"`
		} `json:"request"`
	} `json:"entry"`
}

// maxBundleEntries bounds the work one request can ask for; the body cap
// bounds the bytes, this bounds the per-entry overhead of tiny entries.
const maxBundleEntries = 20000

// Sentinels under the *Error of a Bundle the server does not run as
// asked, for in-process callers (the importer) to tell them apart.
var (
	errNoAtomicCommit = errors.New("the database cannot commit several writes atomically")
	errBundleTooLarge = errors.New("the Bundle is larger than a request may be")
)

// runBundle runs a batch or transaction Bundle (body, as posted); ret is
// the Prefer return= of its response entries.
func (s *Server) runBundle(ctx context.Context, body []byte, ret string) (bundleResult, error) {
	var b bundleRequest
	if err := json.Unmarshal(body, &b); err != nil {
		return bundleResult{}, newError(http.StatusBadRequest, codeStructure, "the body is not a FHIR JSON Bundle: %v", err)
	}
	if b.ResourceType != "Bundle" {
		return bundleResult{}, errBadRequest("POST to the base takes a Bundle, not %q", b.ResourceType)
	}
	if len(b.Entry) > maxBundleEntries {
		e := newError(http.StatusRequestEntityTooLarge, codeTooCostly, "the Bundle has %d entries; at most %d are accepted", len(b.Entry), maxBundleEntries)
		e.cause = errBundleTooLarge
		return bundleResult{}, e
	}
	entries := make([]*txEntry, len(b.Entry))
	errs := make([]error, len(b.Entry))
	for i, be := range b.Entry {
		e := &txEntry{n: i, fullURL: be.FullURL, raw: be.Resource}
		entries[i] = e
		if be.Request == nil {
			errs[i] = entryError(e, errBadRequest("entry.request is required in a %s", b.Type))
			continue
		}
		r := be.Request
		e.method, e.url = strings.ToUpper(r.Method), r.URL
		e.ifNoneExist, e.ifNoneMatch, e.ifModifiedSince = r.IfNoneExist, r.IfNoneMatch, r.IfModifiedSince
		if r.IfMatch != "" {
			v, ok := ParseETag(r.IfMatch)
			if !ok {
				errs[i] = entryError(e, errBadRequest("ifMatch %q is not a version ETag such as W/\"3\"", r.IfMatch))
				continue
			}
			e.ifMatch = v
		}
		errs[i] = entryError(e, s.parseEntryURL(e))
	}
	switch b.Type {
	case "transaction":
		for _, err := range errs {
			if err != nil {
				return bundleResult{}, err
			}
		}
		return s.transaction(ctx, entries, ret)
	case "batch":
		return s.batch(ctx, entries, errs, ret), nil
	}
	return bundleResult{}, errBadRequest("POST to the base takes a batch or transaction Bundle, not type %q", b.Type)
}

// parseEntryURL reads request.method and request.url of an entry.
func (s *Server) parseEntryURL(e *txEntry) error {
	u := e.url
	if strings.HasPrefix(u, s.base+"/") {
		u = strings.TrimPrefix(u, s.base+"/")
	}
	u = strings.TrimPrefix(u, "/")
	path, rawQuery, hasQuery := strings.Cut(u, "?")
	// Only the path says whether the URL is absolute: the query may hold
	// URLs of its own (code=http://loinc.org|8867-4).
	if path == "" || strings.Contains(path, "://") {
		return errBadRequest("request.url %q must be relative to this server's base", e.url)
	}
	seg := strings.Split(path, "/")
	for _, sg := range seg {
		if sg == "" || sg == "." || sg == ".." {
			return errBadRequest("request.url %q is not a FHIR URL", e.url)
		}
	}
	switch e.method {
	case http.MethodGet, http.MethodHead:
		e.target = u
		return nil
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
	default:
		return errBadRequest("request.method %q is not an HTTP verb of FHIR", e.method)
	}
	if e.method == http.MethodPost && strings.HasPrefix(seg[len(seg)-1], "$") {
		// An operation: found and its Parameters read now, so that a
		// transaction naming one this server does not run, or with a
		// malformed input, fails before anything is written.
		if len(seg) > 1 && !conformance.IsResourceType(seg[0]) {
			return errNotFound("unknown resource type %q", seg[0])
		}
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return errBadRequest("request.url %q: the query is not valid: %v", e.url, err)
		}
		if _, err := s.opEntryRequest(seg, e.raw, &ReadRequest{Query: q}); err != nil {
			return err
		}
		e.op, e.target = true, u
		return nil
	}
	e.typ = seg[0]
	if !conformance.IsResourceType(e.typ) {
		return errNotFound("unknown resource type %q", e.typ)
	}
	switch {
	case e.method == http.MethodPost && len(seg) == 1 && !hasQuery:
	case (e.method == http.MethodPut || e.method == http.MethodDelete) && len(seg) == 1 && hasQuery:
		q, err := ConditionalParams(e.typ, rawQuery)
		if err != nil {
			return err
		}
		e.query = q
	case e.method != http.MethodPost && len(seg) == 2 && !hasQuery:
		if !ValidID(seg[1]) {
			return errBadRequest("invalid resource id %q: R4 ids are 1-64 of [A-Za-z0-9-.]", seg[1])
		}
		e.id = seg[1]
	default:
		return errBadRequest("request.url %q does not fit %s", e.url, e.method)
	}
	return nil
}

// parseEntryResource validates the resource of a write entry.
func (s *Server) parseEntryResource(ctx context.Context, e *txEntry) error {
	if e.op {
		return nil // the operation reads its Parameters or its resource itself
	}
	switch e.method {
	case http.MethodPost, http.MethodPut:
		if len(e.raw) == 0 {
			return entryError(e, errBadRequest("%s needs a resource", e.method))
		}
		parsed, err := s.parseResource(ctx, e.typ, e.raw)
		if err != nil {
			return entryError(e, err)
		}
		e.res, e.resID = parsed.Resource, parsed.ID
		if e.method == http.MethodPut && e.id != "" && parsed.ID != e.id {
			if parsed.ID == "" {
				return entryError(e, errBadRequest("the resource has no id; update requires it to equal the URL id %q", e.id))
			}
			return entryError(e, errBadRequest("the resource id %q does not match the URL id %q", parsed.ID, e.id))
		}
	case http.MethodPatch:
		ops, _, err := binaryPatch(e.raw)
		if err != nil {
			return entryError(e, err)
		}
		e.patch = ops
	}
	return nil
}

// binaryPatch reads the JSON Patch of a transaction PATCH entry, carried
// (as http.html#transaction says) in a Binary resource.
func binaryPatch(raw []byte) (jsonpatch.Patch, []byte, error) {
	var bin struct {
		ResourceType string `json:"resourceType"`
		ContentType  string `json:"contentType"`
		Data         string `json:"data"`
	}
	if err := json.Unmarshal(raw, &bin); err != nil || bin.ResourceType != "Binary" {
		return nil, nil, errBadRequest("a PATCH entry carries its JSON Patch in a Binary resource")
	}
	if bin.ContentType != mimeJSONPatch {
		return nil, nil, newError(http.StatusUnsupportedMediaType, codeNotSupp, "PATCH entries take %s, not %q", mimeJSONPatch, bin.ContentType)
	}
	data, err := base64.StdEncoding.DecodeString(bin.Data)
	if err != nil {
		return nil, nil, errBadRequest("Binary.data is not base64: %v", err)
	}
	ops, err := jsonpatch.DecodePatch(data)
	if err != nil {
		return nil, nil, newError(http.StatusBadRequest, codeStructure, "invalid JSON Patch document: %v", err)
	}
	return ops, data, nil
}

// writeEntry is the response entry of a write entry of a transaction or
// a batch after its commit.
func (s *Server) writeEntry(ctx context.Context, r WriteResult, ret string) (map[string]any, error) {
	resp := map[string]any{"status": statusLine(r.Status)}
	out := map[string]any{"response": resp}
	if r.Rec.ID != "" && r.Rec.VersionID > 0 {
		v, err := s.view(ctx)
		if err != nil {
			return nil, err
		}
		resp["location"] = s.VersionURL(r.Rec)
		resp["etag"] = ETag(r.Rec.VersionID)
		resp["lastModified"] = formatInstant(r.Rec.LastUpdated)
		if !r.Rec.Deleted {
			out["fullUrl"] = s.resourceURL(r.Rec.Type, r.Rec.ID)
			representation := ret == "representation" && !r.Minimal
			if representation && len(r.Rec.JSON) > 0 {
				// As respondWrite: a caller who may write but not read the
				// result (u or c without r) gets no resource back.
				representation = s.recordReadable(ctx, r.Rec)
			}
			if representation || v != nil {
				// Under a view the entry names the resource as the view does.
				raw, id, err := s.emit(ctx, v, nil, r.Rec)
				if err != nil {
					return nil, err
				}
				if v != nil {
					out["fullUrl"] = s.resourceURL(r.Rec.Type, id)
					resp["location"] = s.resourceURL(r.Rec.Type, id) + "/_history/" + strconv.FormatInt(r.Rec.VersionID, 10)
					delete(resp, "lastModified")
				}
				if representation {
					out["resource"] = json.RawMessage(raw)
				}
			}
		}
	}
	if ret == "OperationOutcome" {
		msg := r.Diagnostics
		switch {
		case msg != "":
		case r.Wrote:
			msg = "stored"
		default:
			msg = "nothing written"
		}
		resp["outcome"] = outcome([]conformance.Issue{{Severity: "information", Code: codeInfo, Diagnostics: msg}})
	}
	return out, nil
}

func statusLine(code int) string {
	return fmt.Sprintf("%d %s", code, http.StatusText(code))
}

// parseEntries validates the resources of a transaction on every core:
// validation is most of the CPU a transaction costs outside the database,
// and the entries are independent. The error reported is the one of the
// first failing entry in Bundle order, whatever the scheduling.
func (s *Server) parseEntries(ctx context.Context, entries []*txEntry) error {
	errs := make([]error, len(entries))
	var next atomic.Int64
	var failed atomic.Bool
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(entries)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= len(entries) {
					return
				}
				if errs[i] = s.parseEntryResource(ctx, entries[i]); errs[i] != nil {
					failed.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
