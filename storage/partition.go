package storage

import "slices"

// Partitioning places each resource in the partition of the patient whose
// compartment it belongs to, so that a backend that spreads data over
// machines (MongoDB sharding) can keep one patient's record together and
// send a patient-scoped query to the one machine that holds it.
//
// The rule, from the index entries alone (backends know no FHIR):
//
//   - a Patient is in its own partition, "Patient/<id>";
//   - a resource whose patient-compartment references (Links) name exactly
//     one local Patient is in that patient's partition;
//   - one that names several patients is in PartitionShared;
//   - one that names none (an Organization, a Medication) is in its own
//     partition, "<Type>/<id>", spread like any other key.
//
// Targets is the other half: the partitions that can hold the matches of a
// query. Both halves read the same Links, so a query that requires a
// compartment reference to Patient/X can only match resources whose key is
// Patient/X or PartitionShared; Targets never narrows a query that could
// match elsewhere.
type Partitioning struct {
	// Links lists, per resource type, the reference parameters that put a
	// resource in a patient's compartment (the R4 CompartmentDefinition
	// patient). The Patient type's own links (Patient.link) are ignored: a
	// Patient is always in its own partition.
	Links map[string][]PartitionLink
}

// PartitionLink is one compartment reference parameter of a type.
type PartitionLink struct {
	Param string
	// OnlyPatient says the parameter can refer to nothing but a Patient,
	// so that a search on a bare id ("patient=123") names Patient/123.
	OnlyPatient bool
}

// PartitionShared is the partition of resources in several patients'
// compartments. The leading '~' sorts it after every "Type/id" key, so
// that on a range-sharded collection it is one chunk of its own.
const PartitionShared = "~shared"

func (p Partitioning) link(typ, param string) (PartitionLink, bool) {
	for _, l := range p.Links[typ] {
		if l.Param == param {
			return l, true
		}
	}
	return PartitionLink{}, false
}

// Key is the partition of resource typ/id with index entries es.
func (p Partitioning) Key(typ, id string, es []Entry) string {
	if typ == "Patient" {
		return "Patient/" + id
	}
	patient := ""
	for i := range es {
		e := &es[i]
		if e.Kind != KindReference || e.RefID == "" {
			continue
		}
		l, ok := p.link(typ, e.Param)
		if !ok {
			continue
		}
		if e.RefType != "Patient" {
			if l.OnlyPatient {
				// Not what the parameter's target allows, but a search on
				// a bare id would match it: keep it where every targeted
				// query looks.
				return PartitionShared
			}
			continue
		}
		switch {
		case patient == "":
			patient = e.RefID
		case patient != e.RefID:
			return PartitionShared
		}
	}
	if patient == "" {
		return typ + "/" + id
	}
	return "Patient/" + patient
}

// Targets returns the partitions that hold every possible match of q, in
// sorted order, or nil when the matches may be anywhere.
func (p Partitioning) Targets(q Query) []string {
	if len(q.Types) == 0 || q.Filter == nil {
		return nil
	}
	var all []string
	for _, typ := range q.Types {
		t := p.targets(typ, q.Filter)
		if t == nil {
			return nil
		}
		all = append(all, t...)
	}
	slices.Sort(all)
	return slices.Compact(all)
}

func (p Partitioning) targets(typ string, e Expr) []string {
	switch e := e.(type) {
	case And:
		// Every conjunct must hold: the narrowest one bounds the matches.
		var best []string
		for _, x := range e.Exprs {
			if t := p.targets(typ, x); t != nil && (best == nil || len(t) < len(best)) {
				best = t
			}
		}
		return best
	case Or:
		var all []string
		for _, x := range e.Exprs {
			t := p.targets(typ, x)
			if t == nil {
				return nil
			}
			all = append(all, t...)
		}
		return all
	case IDs:
		if typ != "Patient" || len(e.IDs) == 0 {
			return nil
		}
		out := make([]string, len(e.IDs))
		for i, id := range e.IDs {
			out[i] = "Patient/" + id
		}
		return out
	case Match:
		if typ == "Patient" || e.Kind != KindReference {
			return nil
		}
		l, ok := p.link(typ, e.Param)
		if !ok {
			return nil
		}
		ids := patientRefs(e.Cond, l.OnlyPatient)
		if ids == nil {
			return nil
		}
		out := make([]string, 0, len(ids)+1)
		for _, id := range ids {
			out = append(out, "Patient/"+id)
		}
		return append(out, PartitionShared)
	}
	return nil
}

// patientRefs returns the Patient ids a reference condition requires one
// of, or nil when it does not pin the reference to named Patients.
func patientRefs(cond Expr, onlyPatient bool) []string {
	switch c := cond.(type) {
	case Cmp:
		if c.Field == FieldRefID && c.Op == OpEq && onlyPatient {
			if id, ok := c.Value.(string); ok && id != "" {
				return []string{id}
			}
		}
	case And:
		typed, id := false, ""
		for _, x := range c.Exprs {
			cmp, ok := x.(Cmp)
			if !ok || cmp.Op != OpEq {
				continue
			}
			v, _ := cmp.Value.(string)
			switch cmp.Field {
			case FieldRefType:
				typed = typed || v == "Patient"
			case FieldRefID:
				id = v
			}
		}
		if id != "" && (typed || onlyPatient) {
			return []string{id}
		}
	case Or:
		var all []string
		for _, x := range c.Exprs {
			ids := patientRefs(x, onlyPatient)
			if ids == nil {
				return nil
			}
			all = append(all, ids...)
		}
		return all
	}
	return nil
}
