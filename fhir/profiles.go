package fhir

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

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
	issues := s.profiles.Validate(ctx, res, profile.Options{SkipCore: s.skipCore, Fetch: s.profileFetcher})
	if typ == "StructureDefinition" && !conformance.HasErrors(issues) {
		if err := s.profiles.Check(profile.WithFetch(ctx, s.profileFetcher), res); err != nil {
			issues = append(issues, conformance.Issue{Severity: "error", Code: codeProcessing,
				Diagnostics: "the StructureDefinition cannot be used as a profile: " + err.Error(), Expression: "StructureDefinition"})
		}
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
		if !validID(id) {
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
