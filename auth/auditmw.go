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
// CapabilityStatement carry no patient data and are not recorded. A
// failure to record is logged, not hidden: the response is already gone.
func AuditMiddleware(sink AuditSink, source, fhirPath string, log *slog.Logger) echo.MiddlewareFunc {
	if log == nil {
		log = slog.Default()
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			var wa *writeAudit
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
			err := next(c)
			if err != nil && !c.Response().Committed {
				// Let the server's error handler write the answer now, so
				// that the status recorded is the one the client gets.
				c.Error(err)
				err = nil
			}
			r := c.Request()
			rest, ok := strings.CutPrefix(r.URL.Path, fhirPath)
			if !ok || rest == "/metadata" || strings.HasPrefix(rest, "/.well-known/") || r.Method == http.MethodOptions {
				return err
			}
			interaction, action, typ, id := classify(r.Method, strings.Trim(rest, "/"))
			if wa != nil && wa.done() > 0 && interaction != "batch/transaction" {
				return err // recorded by the Commit that made the change
			}
			ev := NewAuditEvent(r.Context(), interaction, action, typ)
			if id != "" {
				ev.IDs = []string{id}
				if typ == "Patient" && !contains(ev.Patients, id) {
					ev.Patients = append(ev.Patients, id)
				}
			}
			ev.Query = r.URL.RawQuery
			ev.Outcome = c.Response().Status
			ev.Source = source
			ev.RemoteAddr = c.RealIP()
			if rerr := sink.RecordAudit(r.Context(), ev); rerr != nil {
				log.ErrorContext(r.Context(), "audit event not recorded", "err", rerr, "interaction", interaction, "type", typ)
			}
			return err
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
