package fhir

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/anodyne-fhir/anodyne/storage"
)

// OutputFilter is the one output hook (issue 8, "on read"): every resource
// that leaves this package (read, vread, history entries, search matches
// and includes, compartment searches, $everything, batch and transaction
// entries, write responses, $export files) is passed through emit, which
// applies _summary/_elements shaping and then the caller's View. A caller
// whose View is nil receives stored resources unchanged.
//
// The filter is where research de-identification plugs in; this package
// does not know what a View does to a resource, only that nothing leaves
// without passing it.
type OutputFilter interface {
	// For returns the View of the caller in ctx, or nil when output
	// passes unchanged.
	For(ctx context.Context) (View, error)
	// Named returns the View a bulk job recorded (View.Name) at kick-off:
	// jobs run after the request, without its Principal.
	Named(ctx context.Context, name string) (View, error)
}

// View shapes what one kind of caller sees and translates what it asks
// in its own terms (pseudonyms) into stored ones.
type View interface {
	// Name identifies the view in persisted bulk jobs.
	Name() string
	// Resource returns the resource as this caller may receive it (it may
	// modify res). Its "id" is the id the caller knows the resource by.
	Resource(ctx context.Context, res map[string]any) (map[string]any, error)
	// ID maps an id the caller names in a path to the stored id; ok is
	// false when it names nothing this caller could know.
	ID(ctx context.Context, typ, id string) (stored string, ok bool, err error)
	// Search rewrites search parameters into stored terms, or refuses
	// (an *Error, 400) those the caller may not ask.
	Search(ctx context.Context, types []string, params url.Values) (url.Values, error)
}

// A DeferringView is a View that records something durable for each
// resource it shapes (research pseudonyms, so that later requests naming
// them can be answered). Under the context Defer returns, Resource only
// collects those records; flush stores them all at once, and must
// succeed before the response that holds the resources is sent.
type DeferringView interface {
	View
	Defer(ctx context.Context) (deferred context.Context, flush func(context.Context) error)
}

// deferOutput lets a response of many resources record what its View
// derives from them in one write; for other Views flush does nothing.
func deferOutput(ctx context.Context, v View) (context.Context, func(context.Context) error) {
	if dv, ok := v.(DeferringView); ok {
		return dv.Defer(ctx)
	}
	return ctx, func(context.Context) error { return nil }
}

// view returns the caller's View (nil without an OutputFilter or when the
// caller's output is unfiltered).
func (s *Server) view(ctx context.Context) (View, error) {
	if s.output == nil {
		return nil, nil
	}
	v, err := s.output.For(ctx)
	if err != nil {
		return nil, fmt.Errorf("choosing the output view: %w", err)
	}
	return v, nil
}

// shaping reduces a decoded resource (_summary, _elements); nil keeps it whole.
type shaping func(typ string, res map[string]any) error

// emit is the one function every resource leaving the package passes:
// shaping first (it only removes elements), then the type's redaction
// (Config.Redact), then the caller's view. It
// returns the JSON to send and the id the caller knows the resource by.
func (s *Server) emit(ctx context.Context, v View, shape shaping, rec storage.Record) ([]byte, string, error) {
	redact := s.redact[rec.Type]
	if v == nil && shape == nil && redact == nil {
		return rec.JSON, rec.ID, nil
	}
	res, err := decodeStored(rec)
	if err != nil {
		return nil, "", err
	}
	if shape != nil {
		if err := shape(rec.Type, res); err != nil {
			return nil, "", err
		}
	}
	if redact != nil {
		if err := redact(ctx, res); err != nil {
			return nil, "", fmt.Errorf("redacting %s for output: %w", rec.Type, err)
		}
	}
	id := rec.ID
	if v != nil {
		if res, err = v.Resource(ctx, res); err != nil {
			return nil, "", fmt.Errorf("filtering %s for output: %w", rec.Type, err)
		}
		id, _ = res["id"].(string)
	}
	raw, err := encodeResourceSized(res, len(rec.JSON)+len(rec.JSON)/4)
	if err != nil {
		return nil, "", err
	}
	return raw, id, nil
}

// storedID maps an id from a request path through the caller's view; a
// name the caller could not know answers 404, worded with the name it used.
func (s *Server) storedID(ctx context.Context, v View, typ, id string) (string, error) {
	if v == nil {
		return id, nil
	}
	real, ok, err := v.ID(ctx, typ, id)
	if err != nil {
		return "", fmt.Errorf("resolving %s/%s: %w", typ, id, err)
	}
	if !ok {
		return "", errNotFound("%s/%s is not known", typ, id)
	}
	return real, nil
}

// viewSearch rewrites search parameters through the view. The caller's
// own spelling is what links and cursors keep (restoreKept), so stored
// ids never appear in a paging link.
func viewSearch(ctx context.Context, v View, types []string, params url.Values) (url.Values, error) {
	if v == nil {
		return params, nil
	}
	out, err := v.Search(ctx, types, params)
	if err != nil {
		var fe *Error
		if errors.As(err, &fe) {
			return nil, err
		}
		return nil, fmt.Errorf("translating search parameters: %w", err)
	}
	return out, nil
}

// restoreKept puts the caller's spelling back into the kept parameters.
func restoreKept(kept, spoken url.Values) {
	for k := range kept {
		if vs, ok := spoken[k]; ok && k != "_count" {
			kept[k] = vs
		}
	}
}

// errViewRefuses is the answer of an interaction whose output a view
// cannot shape (an OperationOutcome that would describe hidden content).
func errViewRefuses(what string) error {
	return newError(http.StatusForbidden, codeForbidden, "%s is not available to this client: its answer would describe content that is hidden from it", what)
}
