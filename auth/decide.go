package auth

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/anodyne-fhir/anodyne/storage"
)

// Decision is the answer of the decision point for one interaction on one
// resource type.
type Decision struct {
	Allowed bool
	// Filter, when not nil, must hold for every resource the interaction
	// returns or writes: the FHIR layer ANDs it into searches and checks
	// single resources with storage.Matches. Nil means unrestricted.
	Filter storage.Expr
	// Reason explains a denial (or a restriction) for logs and OperationOutcomes.
	Reason string
}

// Authorizer is what the FHIR layer calls on every path a resource leaves
// or enters by. action is "create", "read", "update", "delete" or "search"
// (vread and instance history are "read"; type and system history are
// "search"), or "aggregate" (statistics such as $stats, which return no
// resource: the only action an aggregates-only research client is
// granted); resourceType is empty for system-level interactions.
type Authorizer interface {
	Decide(ctx context.Context, action, resourceType string) (Decision, error)
}

// Registry is the part of the resource registry the decision point needs:
// the Patient compartment definition and the compiler of search parameters
// (for query-limited scopes). *resources.Registry satisfies it.
type Registry interface {
	// Compartment lists the search parameters linking resources of typ to
	// the compartment (e.g. "Patient"); empty when typ is not a member.
	Compartment(compartment, typ string) []string
	// Compile turns one search parameter with its values (an OR list) into
	// a selection expression.
	Compile(typ, code, modifier string, values []string) (storage.Expr, error)
}

// Policy is the one decision point. It reads the Principal from the
// context; a request without one is denied (fail closed). Use AllowAll for
// a server started with --auth=off.
type Policy struct {
	reg Registry
}

// NewPolicy returns the decision point over reg. reg may be nil only if no
// patient/ or query-limited scope will ever be granted; otherwise such
// scopes grant nothing.
func NewPolicy(reg Registry) *Policy { return &Policy{reg: reg} }

var _ Authorizer = (*Policy)(nil)

// AllowAll is the authorizer of a server running without authorization.
type AllowAll struct{}

// Decide allows everything without a filter.
func (AllowAll) Decide(context.Context, string, string) (Decision, error) {
	return Decision{Allowed: true}, nil
}

// "aggregate" ($stats) needs the search letter: statistics are computed
// over what the caller may search.
var actionLetter = map[string]byte{"create": 'c', "read": 'r', "update": 'u', "delete": 'd', "search": 's', "aggregate": 's'}

// Decide grants the interaction when at least one granted scope covers it.
// The filters of all covering scopes are ORed: each scope opens its own
// slice of data (compartment, query), and the union is what the token sees.
func (p *Policy) Decide(ctx context.Context, action, resourceType string) (Decision, error) {
	letter, ok := actionLetter[action]
	if !ok {
		return Decision{}, fmt.Errorf("auth: unknown action %q", action)
	}
	pr := FromContext(ctx)
	if pr == nil {
		return Decision{Reason: "no authenticated principal"}, nil
	}
	// Research clients read de-identified data and never write; an
	// aggregates-only client never receives a row.
	if pr.ResearchProject != "" {
		if letter != 'r' && letter != 's' {
			return Decision{Reason: "research clients (project " + pr.ResearchProject + ") may not write"}, nil
		}
		if pr.ResearchAccess == ResearchAggregates && action != "aggregate" {
			return Decision{Reason: "this research client has aggregates-only access: no resource is returned to it"}, nil
		}
	}
	var (
		filters []storage.Expr
		reasons []string
		open    bool
	)
	for _, sc := range pr.Scopes.Resource {
		if resourceType == "" {
			if sc.Type != "*" {
				continue
			}
		} else if sc.Type != "*" && sc.Type != resourceType {
			continue
		}
		if strings.IndexByte(sc.Letters, letter) < 0 {
			continue
		}
		// The audit trail is for administrators: only a user/ or system/
		// scope naming AuditEvent opens it, never a wildcard or patient/.
		if resourceType == "AuditEvent" && (sc.Type != "AuditEvent" || sc.Context == ContextPatient) {
			continue
		}
		f, unrestricted, why := p.scopeFilter(pr, sc, resourceType)
		if why != "" {
			reasons = append(reasons, sc.Raw+": "+why)
			continue
		}
		if unrestricted {
			open = true
			break
		}
		filters = append(filters, f)
	}
	// SMART App Launch: the fhirUser resource must be readable with the
	// token that carries it, whatever the resource scopes say.
	if !open && action == "read" && pr.Scopes.Has("fhirUser") {
		if typ, id, ok := strings.Cut(pr.FHIRUser, "/"); ok && typ == resourceType && id != "" {
			filters = append(filters, storage.IDs{IDs: []string{id}})
		}
	}
	switch {
	case open:
		return Decision{Allowed: true}, nil
	case len(filters) == 1:
		return Decision{Allowed: true, Filter: filters[0]}, nil
	case len(filters) > 1:
		return Decision{Allowed: true, Filter: storage.Or{Exprs: filters}}, nil
	}
	reason := fmt.Sprintf("no granted scope allows %s on %s", action, typeName(resourceType))
	if len(reasons) > 0 {
		reason += " (" + strings.Join(reasons, "; ") + ")"
	}
	return Decision{Reason: reason}, nil
}

func typeName(t string) string {
	if t == "" {
		return "the whole system"
	}
	return t
}

// scopeFilter returns what one scope opens on resourceType: unrestricted,
// or a filter, or a reason why it opens nothing.
func (p *Policy) scopeFilter(pr *Principal, sc Scope, resourceType string) (storage.Expr, bool, string) {
	var parts []storage.Expr
	switch sc.Context {
	case ContextPatient:
		if pr.Patient == "" {
			return nil, false, "no patient in context"
		}
		f, why := p.compartment(pr.Patient, resourceType)
		if why != "" {
			return nil, false, why
		}
		parts = append(parts, f)
	case ContextUser:
		// What a user may see: a Patient their own compartment; a
		// practitioner what the scope names (Anodyne has no care-team
		// policy yet); anyone else (RelatedPerson, Person, or a token
		// without fhirUser) only the patient in context, if any.
		typ, id, _ := strings.Cut(pr.FHIRUser, "/")
		switch {
		case typ == "Practitioner" || typ == "PractitionerRole":
		case typ == "Patient" && id != "":
			f, why := p.compartment(id, resourceType)
			if why != "" {
				return nil, false, why
			}
			parts = append(parts, f)
		case pr.Patient != "":
			f, why := p.compartment(pr.Patient, resourceType)
			if why != "" {
				return nil, false, why
			}
			parts = append(parts, f)
		default:
			return nil, false, "the user's access cannot be established (no fhirUser or patient)"
		}
	case ContextSystem:
	}
	if len(sc.Query) > 0 {
		if resourceType == "" {
			return nil, false, "a query-limited scope cannot open a system-level interaction"
		}
		q, err := p.compileQuery(sc, resourceType)
		if err != nil {
			return nil, false, err.Error()
		}
		parts = append(parts, q)
	}
	switch len(parts) {
	case 0:
		return nil, true, ""
	case 1:
		return parts[0], false, ""
	}
	return storage.And{Exprs: parts}, false, ""
}

// compartment is the Patient compartment of patient for one type.
func (p *Policy) compartment(patient, resourceType string) (storage.Expr, string) {
	if resourceType == "" {
		return nil, "a compartment-limited scope cannot open a system-level interaction"
	}
	if resourceType == "Patient" {
		return storage.IDs{IDs: []string{patient}}, ""
	}
	if p.reg == nil {
		return nil, "no compartment definitions loaded"
	}
	params := p.reg.Compartment("Patient", resourceType)
	if len(params) == 0 {
		return nil, resourceType + " is not in the Patient compartment"
	}
	ors := make([]storage.Expr, 0, len(params))
	for _, param := range params {
		ors = append(ors, PatientRef(param, patient))
	}
	if len(ors) == 1 {
		return ors[0], ""
	}
	return storage.Or{Exprs: ors}, ""
}

// PatientRef is the expression "reference parameter param points to Patient/id".
func PatientRef(param, id string) storage.Expr {
	return storage.Match{Param: param, Kind: storage.KindReference, Cond: storage.And{Exprs: []storage.Expr{
		storage.Cmp{Field: storage.FieldRefType, Op: storage.OpEq, Value: "Patient"},
		storage.Cmp{Field: storage.FieldRefID, Op: storage.OpEq, Value: id},
	}}}
}

func (p *Policy) compileQuery(sc Scope, resourceType string) (storage.Expr, error) {
	if p.reg == nil {
		return nil, fmt.Errorf("no search parameter registry to compile the scope query")
	}
	keys := make([]string, 0, len(sc.Query))
	for k := range sc.Query {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var ands []storage.Expr
	for _, k := range keys {
		code, mod, _ := strings.Cut(k, ":")
		for _, v := range sc.Query[k] {
			e, err := p.reg.Compile(resourceType, code, mod, splitValues(v))
			if err != nil {
				return nil, fmt.Errorf("scope query %s=%s: %w", k, v, err)
			}
			ands = append(ands, e)
		}
	}
	if len(ands) == 1 {
		return ands[0], nil
	}
	return storage.And{Exprs: ands}, nil
}

// splitValues splits a search value on the commas that are not escaped
// with a backslash (search.html#escaping); unescaping is Compile's job.
func splitValues(v string) []string {
	var out []string
	start := 0
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '\\':
			i++
		case ',':
			out = append(out, v[start:i])
			start = i + 1
		}
	}
	return append(out, v[start:])
}
