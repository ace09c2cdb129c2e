package fhir

import (
	"context"
	"net/http"
	"strings"
)

// readRoute finds the read interaction a GET entry of a batch or
// transaction names (the segments of its path under the base), with the
// path's named segments, as the route table maps the same URLs over
// HTTP. Asynchronous and file-serving operations ($export, its status and
// files, $import) are not Bundle entries. A POST entry naming an
// operation is opRoute's.
func (s *Server) readRoute(seg []string) (ReadFunc, map[string]string, error) {
	notEntry := func() (ReadFunc, map[string]string, error) {
		return nil, nil, newError(http.StatusBadRequest, codeNotSupp, "GET %s cannot be an entry of a batch or transaction", strings.Join(seg, "/"))
	}
	op := func(i int) bool { return len(seg) > i && strings.HasPrefix(seg[i], "$") }
	if op(0) {
		// The system operations: $export, its status and files, $import.
		return notEntry()
	}
	switch len(seg) {
	case 1:
		switch seg[0] {
		case "metadata":
			return (*Server).Capabilities, nil, nil
		case "_history":
			return (*Server).HistorySystem, nil, nil
		}
		return (*Server).SearchType, map[string]string{"type": seg[0]}, nil
	case 2:
		p := map[string]string{"type": seg[0]}
		switch {
		case seg[1] == "_history":
			return (*Server).HistoryType, p, nil
		case seg[1] == "$everything":
			return (*Server).EverythingType, p, nil
		case seg[0] == "Observation" && seg[1] == "$lastn":
			return (*Server).LastN, nil, nil
		case seg[0] == "Observation" && seg[1] == "$stats":
			return (*Server).Stats, nil, nil
		case op(1):
			for _, ro := range s.resOps {
				if ro.RunType != nil && seg[0] == ro.Type && seg[1] == "$"+ro.Name {
					return func(s *Server, ctx context.Context, r ReadRequest) (ReadResult, error) {
						return s.RunResourceTypeOperation(ctx, ro, r)
					}, nil, nil
				}
			}
			return notEntry()
		case seg[1] == "_search":
			return notEntry()
		}
		p["id"] = seg[1]
		if seg[0] == "OperationDefinition" {
			return (*Server).ReadOperationDefinition, p, nil
		}
		return (*Server).Read, p, nil
	case 3:
		p := map[string]string{"type": seg[0], "id": seg[1]}
		switch {
		case seg[2] == "_history":
			return (*Server).HistoryInstance, p, nil
		case seg[2] == "$everything":
			return (*Server).Everything, p, nil
		case seg[2] == "$reindex-status":
			return (*Server).ReindexStatus, p, nil
		case op(2) && seg[0] == "Patient":
			for _, po := range s.patientOps {
				if seg[2] == "$"+po.Name {
					return func(s *Server, ctx context.Context, r ReadRequest) (ReadResult, error) {
						return s.RunPatientOperation(ctx, po, r)
					}, p, nil
				}
			}
			return notEntry()
		case op(2):
			for _, ro := range s.resOps {
				if seg[0] == ro.Type && seg[2] == "$"+ro.Name {
					return func(s *Server, ctx context.Context, r ReadRequest) (ReadResult, error) {
						return s.RunResourceOperation(ctx, ro, r)
					}, p, nil
				}
			}
			return notEntry()
		}
		p["comp"] = seg[2]
		return (*Server).SearchCompartment, p, nil
	case 4:
		if seg[2] == "_history" {
			return (*Server).VRead, map[string]string{"type": seg[0], "id": seg[1], "vid": seg[3]}, nil
		}
	}
	return nil, nil, errNotFound("%s is not a FHIR interaction of this server", strings.Join(seg, "/"))
}

// entryOp is the operation a POST entry of a batch or transaction names.
type entryOp struct {
	fn   ReadFunc
	path map[string]string
	// resourceIn: entry.resource is the resource the operation works on
	// ($validate), not a Parameters resource of its parameters.
	resourceIn bool
	name       string
}

// opRoute finds the operation a POST entry names ([type/[id/]]$name), as
// the route table maps POST over HTTP: $lastn, $stats, $validate and the
// registered resource operations. The system operations ($import, the
// bulk kick-offs) are not Bundle entries.
func (s *Server) opRoute(seg []string) (entryOp, error) {
	name := seg[len(seg)-1]
	switch len(seg) {
	case 2:
		p := map[string]string{"type": seg[0]}
		switch {
		case seg[0] == "Observation" && name == "$lastn":
			return entryOp{fn: (*Server).LastN, name: name}, nil
		case seg[0] == "Observation" && name == "$stats":
			return entryOp{fn: (*Server).Stats, name: name}, nil
		case name == "$validate":
			return entryOp{fn: (*Server).ValidateType, path: p, resourceIn: true, name: name}, nil
		}
		for _, ro := range s.resOps {
			if ro.RunType != nil && seg[0] == ro.Type && name == "$"+ro.Name {
				return entryOp{fn: func(s *Server, ctx context.Context, r ReadRequest) (ReadResult, error) {
					return s.RunResourceTypeOperation(ctx, ro, r)
				}, path: p, name: name}, nil
			}
		}
	case 3:
		p := map[string]string{"type": seg[0], "id": seg[1]}
		if name == "$validate" {
			return entryOp{fn: (*Server).ValidateInstance, path: p, resourceIn: true, name: name}, nil
		}
		for _, ro := range s.resOps {
			if seg[0] == ro.Type && name == "$"+ro.Name {
				return entryOp{fn: func(s *Server, ctx context.Context, r ReadRequest) (ReadResult, error) {
					return s.RunResourceOperation(ctx, ro, r)
				}, path: p, name: name}, nil
			}
		}
	}
	return entryOp{}, newError(http.StatusBadRequest, codeNotSupp, "POST %s cannot be an entry of a batch or transaction", strings.Join(seg, "/"))
}

// opEntryRequest completes rq, the request of a POST operation entry
// whose resource is raw, and returns the operation to run: the resource
// is the operation's input ($validate), or its Parameters, added to the
// query as a POSTed Parameters body is.
func (s *Server) opEntryRequest(seg []string, raw []byte, rq *ReadRequest) (ReadFunc, error) {
	op, err := s.opRoute(seg)
	if err != nil {
		return nil, err
	}
	rq.Path = op.path
	switch {
	case op.resourceIn:
		if len(raw) == 0 {
			if op.path["id"] == "" {
				return nil, errBadRequest("POST %s needs the resource to validate", strings.Join(seg, "/"))
			}
			return op.fn, nil // the stored version
		}
		rq.Body = raw
	case len(raw) > 0:
		doc, err := DecodeJSON(raw)
		if err != nil {
			return nil, errBadRequest("%s entry resource: %v", op.name, err)
		}
		res, _ := doc.(map[string]any)
		if rq.Query, err = ParametersQuery(op.name, rq.Query, res); err != nil {
			return nil, err
		}
	}
	return op.fn, nil
}
