package fhir

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/conformance/profile"
	"github.com/anodyne-fhir/anodyne/storage"
)

// Profile validation of writes. Every resource a client writes (create,
// update, patch, transaction and batch entries, Bulk import) is checked by
// conform before it is stamped and indexed: against the core R4
// definition of its type (the invariants ele-1, dom-*, obs-*, ...) unless
// Config.SkipCoreInvariants, and against every profile it claims in
// meta.profile. A claimed profile the server does not know is refused,
// naming it. A StructureDefinition written by a user must itself compile
// (its snapshot is generated from its differential); it then becomes a
// known profile, found in the store by its url (profileFetcher).

// conform validates a client's resource; an error is a 422 with the issues.
func (s *Server) conform(ctx context.Context, typ string, res map[string]any) error {
	if s.profiles == nil {
		return nil
	}
	// Target profiles are checked on stored targets on writes as in
	// $validate: a stored target that does not conform refuses the write,
	// one that cannot be found (not yet stored, outside the caller's
	// access, another server's) is only a warning.
	issues := s.profiles.Validate(ctx, res, profile.Options{SkipCore: s.skipCore, Fetch: s.profileFetcher, Resolve: s.referenceTarget})
	if u, _ := res["url"].(string); typ == "StructureDefinition" && s.profiles.IsCore(u) {
		// Core definitions are the law the server validates by; a stored
		// copy would not change it and would mislead readers.
		issues = append(issues, conformance.Issue{Severity: "error", Code: codeBusiness,
			Diagnostics: u + " is a core FHIR definition and cannot be replaced", Expression: "StructureDefinition.url"})
	}
	if conformance.HasErrors(issues) {
		var errs []conformance.Issue
		for _, is := range issues {
			if isErrorIssue(is) {
				errs = append(errs, is)
			}
		}
		return &Error{Status: http.StatusUnprocessableEntity, Issues: errs}
	}
	if typ == "StructureDefinition" {
		// The next use reads the new version from the store.
		if u, _ := res["url"].(string); u != "" {
			s.profiles.Forget(u)
		}
	}
	return nil
}

// profileFetcher finds a StructureDefinition a user stored, by url. It is
// the server's own lookup of definitions: not limited by the caller's
// access, because a profile is definitional content, not patient data.
func (s *Server) profileFetcher(ctx context.Context, canonical string) (map[string]any, error) {
	req, err := s.compileSearch(ctx, s.newSearchDecisions(), []string{"StructureDefinition"}, url.Values{"url": {canonical}}, true)
	if err != nil {
		return nil, err
	}
	var filter storage.Expr = storage.And{Exprs: req.Filters}
	if len(req.Filters) == 1 {
		filter = req.Filters[0]
	}
	page, err := s.backend.Search(ctx, storage.Query{Types: []string{"StructureDefinition"}, Filter: filter, Count: 2})
	if err != nil {
		return nil, fmt.Errorf("searching StructureDefinition?url=%s: %w", canonical, err)
	}
	for _, rec := range page.Records {
		if rec.Deleted {
			continue
		}
		res, err := decodeRecord(rec)
		if err != nil {
			return nil, err
		}
		return res, nil
	}
	return nil, nil
}

// PublishProfiles stores the profiles shipped with the server (Anodyne's
// and the R4 vital-signs profiles, with their snapshots) as
// StructureDefinition resources under their ids, so that they are read at
// [base]/StructureDefinition/{id} and searched by url like any other. A
// profile already stored at the same version is left alone.
func (s *Server) PublishProfiles(ctx context.Context) error {
	if s.profiles == nil {
		return errors.New("fhir: no profile registry configured")
	}
	defs, err := s.profiles.Published(ctx)
	if err != nil {
		return fmt.Errorf("fhir: published profiles: %w", err)
	}
	for _, def := range defs {
		id, _ := def["id"].(string)
		if !ValidID(id) {
			return fmt.Errorf("fhir: published profile %v has no valid id", def["url"])
		}
		cur, exists, err := s.current(ctx, "StructureDefinition", id)
		if err != nil {
			return err
		}
		if exists && !cur.Deleted {
			old, err := decodeRecord(cur)
			if err != nil {
				return err
			}
			if old["url"] == def["url"] && old["version"] == def["version"] {
				continue
			}
		}
		w, err := s.prepare("StructureDefinition", id, def, cur.VersionID, now(), http.MethodPut)
		if err != nil {
			return err
		}
		if _, err := s.commitOne(ctx, w); err != nil {
			return fmt.Errorf("fhir: publishing %s: %w", def["url"], err)
		}
	}
	return nil
}

// referenceTarget is the profile validator's Resolver (writes and
// $validate): it
// finds the target of a reference that is neither contained nor in the
// Bundle, so that the element's target profiles are checked on it. It
// reads the stored resource (the version a /_history/ reference names,
// else the current one) as the caller may read it: a type or resource
// outside the caller's access, a deleted or unknown one, or another
// server's URL is "not found" (nil), so that the outcome reveals nothing
// a read would not. A caller whose output is shaped by a view, and a type
// the server redacts, get no lookup: the target's conformance would tell
// what the view or the redaction removes.
func (s *Server) referenceTarget(ctx context.Context, ref string) (map[string]any, error) {
	if strings.Contains(ref, "://") {
		rel, ok := strings.CutPrefix(ref, s.base+"/")
		if !ok {
			return nil, nil
		}
		ref = rel
	}
	ref, version, _ := strings.Cut(ref, "/_history/")
	typ, id, ok := strings.Cut(ref, "/")
	if !ok || !conformance.IsResourceType(typ) || !ValidID(id) {
		return nil, nil
	}
	if v, err := s.view(ctx); err != nil {
		return nil, err
	} else if v != nil {
		return nil, errors.New("targets are not read for a caller whose output is filtered")
	}
	if s.redact[typ] != nil {
		return nil, fmt.Errorf("%s is redacted on this server, so it is not read for validation", typ)
	}
	d, err := s.decide(ctx, ActionRead, typ)
	if err != nil {
		var fe *Error
		if errors.As(err, &fe) && fe.Status == http.StatusForbidden {
			return nil, nil
		}
		return nil, err
	}
	var rec storage.Record
	if version != "" {
		n, perr := strconv.ParseInt(version, 10, 64)
		if perr != nil || n < 1 {
			return nil, nil
		}
		rec, err = s.backend.ReadVersion(ctx, typ, id, n)
	} else {
		rec, err = s.backend.Read(ctx, typ, id)
	}
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s/%s for validation: %w", typ, id, err)
	}
	if rec.Deleted {
		return nil, nil
	}
	res, err := decodeRecord(rec)
	if err != nil {
		return nil, err
	}
	if err := s.within(d, ActionRead, typ, id, res); err != nil {
		var fe *Error
		if errors.As(err, &fe) && fe.Status == http.StatusForbidden {
			return nil, nil
		}
		return nil, err
	}
	return res, nil
}
