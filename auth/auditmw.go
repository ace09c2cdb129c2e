package auth

import (
	"context"
	"log/slog"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// AuditMiddleware records one AuditEvent per FHIR request that reached
// the API (answered, refused or failed), after the response is written.
//
// When sink is an AuditPreparer, a write's record is not stored here but
// by the write itself, in the same Commit as the data (see AuditWrites);
// the middleware then stores only what no Commit carried: reads, refused
// and failed requests. A batch or transaction Bundle is still recorded
// here as a whole (its reads and its outcome), besides the records its
// writes committed.
// fhirPath is the path of the FHIR base ("/fhir"). Discovery and the
// CapabilityStatement carry no patient data and are not recorded.
//
// The response is held back until its record is stored (see holdWriter):
// a client never has data whose disclosure the audit trail lacks, and a
// record that cannot be stored turns the answer into a 503.
func AuditMiddleware(sink AuditSink, source, fhirPath string, log *slog.Logger) echo.MiddlewareFunc {
	if log == nil {
		log = slog.Default()
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			var wa *writeAudit
			{
				r := c.Request()
				ra := &requestAudit{sink: sink, source: source, remoteAddr: c.RealIP(), log: log}
				c.SetRequest(r.WithContext(context.WithValue(r.Context(), requestAuditKey{}, ra)))
			}
			if prep, ok := sink.(AuditPreparer); ok {
				r := c.Request()
				if rest, ok := strings.CutPrefix(r.URL.Path, fhirPath); ok {
					interaction, action, typ, _ := classify(r.Method, strings.Trim(rest, "/"))
					base := NewAuditEvent(r.Context(), interaction, action, typ)
					base.Type = "" // a Commit may hold several types: Refs name them
					base.Query = r.URL.RawQuery
					base.Source = source
					base.RemoteAddr = c.RealIP()
					wa = &writeAudit{prep: prep, base: base}
					c.SetRequest(r.WithContext(context.WithValue(r.Context(), writeAuditKey{}, wa)))
				}
			}
			r := c.Request()
			rest, ok := strings.CutPrefix(r.URL.Path, fhirPath)
			if !ok || rest == "/metadata" || strings.HasPrefix(rest, "/.well-known/") || r.Method == http.MethodOptions {
				return next(c)
			}
			interaction, action, typ, id := classify(r.Method, strings.Trim(rest, "/"))
			record := func(status int) error {
				if wa != nil && wa.done() > 0 && interaction != "batch/transaction" {
					return nil // recorded by the Commit that made the change
				}
				r := c.Request()
				ev := NewAuditEvent(r.Context(), interaction, action, typ)
				if id != "" {
					ev.IDs = []string{id}
					if typ == "Patient" && !contains(ev.Patients, id) {
						ev.Patients = append(ev.Patients, id)
					}
				}
				ev.Query = r.URL.RawQuery
				ev.Outcome = status
				ev.Source = source
				ev.RemoteAddr = c.RealIP()
				if rerr := sink.RecordAudit(r.Context(), ev); rerr != nil {
					log.ErrorContext(r.Context(), "audit event not recorded: answered 503 instead", "err", rerr, "interaction", interaction, "type", typ)
					return rerr
				}
				return nil
			}
			resp := c.Response()
			hold := &holdWriter{ResponseWriter: resp.Writer, record: record}
			resp.Writer = hold
			defer func() { resp.Writer = hold.ResponseWriter }()
			err := next(c)
			if err != nil && !resp.Committed {
				// Let the server's error handler write the answer now, so
				// that the status recorded is the one the client gets.
				c.Error(err)
				err = nil
			}
			if !resp.Committed {
				// Nothing written at all (a handler that only set headers).
				resp.WriteHeader(http.StatusOK)
			}
			if hold.release(); hold.refused {
				// What the client got, for the request log and metrics.
				resp.Status = http.StatusServiceUnavailable
			}
			return err
		}
	}
}

// requestAudit is what AuditMiddleware leaves on each request's context
// so that the entries of a batch Bundle, which the FHIR server evaluates
// in process, are recorded as requests of their own (AuditEntry).
type requestAudit struct {
	sink       AuditSink
	source     string
	remoteAddr string
	log        *slog.Logger
}

type requestAuditKey struct{}

// AuditEntry prepares the record of one entry of a batch Bundle, as if it
// were a request of its own: method and target (the entry's request.url,
// relative to the FHIR base, with its query). It returns the context the
// entry runs with (a write then records itself in its own Commit, see
// AuditWrites) and the function to call with the entry's status once it
// is answered, which records what no Commit carried. Outside a request
// audited by AuditMiddleware it changes nothing.
func AuditEntry(ctx context.Context, method, target string) (context.Context, func(status int)) {
	ra, _ := ctx.Value(requestAuditKey{}).(*requestAudit)
	if ra == nil {
		return ctx, func(int) {}
	}
	path, query, _ := strings.Cut(strings.Trim(target, "/"), "?")
	interaction, action, typ, id := classify(method, strings.Trim(path, "/"))
	var wa *writeAudit
	if prep, ok := ra.sink.(AuditPreparer); ok {
		base := NewAuditEvent(ctx, interaction, action, typ)
		base.Type = ""
		base.Query = query
		base.Source = ra.source
		base.RemoteAddr = ra.remoteAddr
		wa = &writeAudit{prep: prep, base: base}
		ctx = context.WithValue(ctx, writeAuditKey{}, wa)
	} else {
		// The outer request's write audit must not record the entry.
		ctx = context.WithValue(ctx, writeAuditKey{}, (*writeAudit)(nil))
	}
	return ctx, func(status int) {
		if wa != nil && wa.done() > 0 {
			return // recorded by the Commit that made the change
		}
		ev := NewAuditEvent(ctx, interaction, action, typ)
		if id != "" {
			ev.IDs = []string{id}
			if typ == "Patient" && !contains(ev.Patients, id) {
				ev.Patients = append(ev.Patients, id)
			}
		}
		ev.Query = query
		ev.Outcome = status
		ev.Source = ra.source
		ev.RemoteAddr = ra.remoteAddr
		if err := ra.sink.RecordAudit(ctx, ev); err != nil {
			ra.log.ErrorContext(ctx, "audit event not recorded", "err", err, "interaction", interaction, "type", typ)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// classify maps a FHIR REST request to its interaction, the R4
// AuditEvent action code, the resource type and id.
func classify(method, path string) (interaction, action, typ, id string) {
	seg := strings.Split(path, "/")
	if path == "" {
		seg = nil
	}
	switch {
	case len(seg) == 0:
		if method == http.MethodPost {
			return "batch/transaction", "E", "", ""
		}
		return "search-system", "E", "", ""
	case seg[0] == "_history":
		return "history-system", "R", "", ""
	case strings.HasPrefix(seg[0], "$"):
		return "operation", "E", "", ""
	}
	typ = seg[0]
	if len(seg) == 1 {
		if method == http.MethodPost {
			return "create", "C", typ, ""
		}
		return "search-type", "E", typ, ""
	}
	switch seg[1] {
	case "_history":
		return "history-type", "R", typ, ""
	case "_search":
		return "search-type", "E", typ, ""
	}
	if strings.HasPrefix(seg[1], "$") {
		return "operation", "E", typ, ""
	}
	id = seg[1]
	switch {
	case len(seg) >= 4 && seg[2] == "_history":
		return "vread", "R", typ, id
	case len(seg) == 3 && seg[2] == "_history":
		return "history-instance", "R", typ, id
	case len(seg) >= 3:
		return "operation", "E", typ, id
	}
	switch method {
	case http.MethodPut:
		return "update", "U", typ, id
	case http.MethodPatch:
		return "patch", "U", typ, id
	case http.MethodDelete:
		return "delete", "D", typ, id
	}
	return "read", "R", typ, id
}
