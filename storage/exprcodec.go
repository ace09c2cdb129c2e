package storage

import (
	"encoding/json"
	"errors"
	"fmt"
)

// A bulk export job outlives the request that started it (it resumes after
// a restart), so the authorization filter decided for the requester and
// the compiled _typeFilter queries are persisted with the job. This file
// is the JSON form of a Expr tree for that purpose only.

// exprJSON is one node. Exactly the fields of its Op are set.
type exprJSON struct {
	Op     string     `json:"op"`
	Exprs  []exprJSON `json:"exprs,omitempty"`  // And, Or
	Expr   *exprJSON  `json:"expr,omitempty"`   // Not, Match.Cond, Part.Cond, Chain.Where, Has.Where
	Param  string     `json:"param,omitempty"`  // Match, Chain, Has
	Kind   uint8      `json:"kind,omitempty"`   // Match
	Index  int        `json:"index,omitempty"`  // Part
	Field  uint8      `json:"field,omitempty"`  // Cmp
	CmpOp  uint8      `json:"cmp,omitempty"`    // Cmp
	Str    *string    `json:"str,omitempty"`    // Cmp value when a string
	Int    *int64     `json:"int,omitempty"`    // Cmp value when an int64
	Float  *float64   `json:"float,omitempty"`  // Cmp value when a float64
	IDs    []string   `json:"ids,omitempty"`    // IDs
	Type   string     `json:"type,omitempty"`   // Has
	Target string     `json:"target,omitempty"` // Chain
}

// maxExprDepth bounds decoding so that a corrupt job record cannot
// exhaust the stack.
const maxExprDepth = 64

// MarshalExpr encodes e (nil encodes as nil) for storage.
func MarshalExpr(e Expr) (json.RawMessage, error) {
	if e == nil {
		return nil, nil
	}
	n, err := exprToJSON(e)
	if err != nil {
		return nil, err
	}
	return json.Marshal(n)
}

// UnmarshalExpr decodes what MarshalExpr wrote; empty or null is nil.
func UnmarshalExpr(raw json.RawMessage) (Expr, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var n exprJSON
	if err := json.Unmarshal(raw, &n); err != nil {
		return nil, fmt.Errorf("decoding stored filter: %w", err)
	}
	return exprFromJSON(n, 0)
}

func exprToJSON(e Expr) (exprJSON, error) {
	sub := func(x Expr) (*exprJSON, error) {
		if x == nil {
			return nil, nil
		}
		n, err := exprToJSON(x)
		return &n, err
	}
	list := func(xs []Expr) ([]exprJSON, error) {
		out := make([]exprJSON, 0, len(xs))
		for _, x := range xs {
			n, err := exprToJSON(x)
			if err != nil {
				return nil, err
			}
			out = append(out, n)
		}
		return out, nil
	}
	var err error
	switch x := e.(type) {
	case And:
		n := exprJSON{Op: "and"}
		n.Exprs, err = list(x.Exprs)
		return n, err
	case Or:
		n := exprJSON{Op: "or"}
		n.Exprs, err = list(x.Exprs)
		return n, err
	case Not:
		n := exprJSON{Op: "not"}
		n.Expr, err = sub(x.Expr)
		return n, err
	case Match:
		n := exprJSON{Op: "match", Param: x.Param, Kind: uint8(x.Kind)}
		n.Expr, err = sub(x.Cond)
		return n, err
	case Part:
		n := exprJSON{Op: "part", Index: x.Index}
		n.Expr, err = sub(x.Cond)
		return n, err
	case Cmp:
		n := exprJSON{Op: "cmp", Field: uint8(x.Field), CmpOp: uint8(x.Op)}
		switch v := x.Value.(type) {
		case string:
			n.Str = &v
		case int64:
			n.Int = &v
		case float64:
			n.Float = &v
		default:
			return n, fmt.Errorf("filter comparison value of type %T cannot be stored", x.Value)
		}
		return n, nil
	case IDs:
		return exprJSON{Op: "ids", IDs: x.IDs}, nil
	case Chain:
		n := exprJSON{Op: "chain", Param: x.Param, Target: x.Target}
		n.Expr, err = sub(x.Where)
		return n, err
	case Has:
		n := exprJSON{Op: "has", Type: x.Type, Param: x.Param}
		n.Expr, err = sub(x.Where)
		return n, err
	}
	return exprJSON{}, fmt.Errorf("filter node %T cannot be stored", e)
}

func exprFromJSON(n exprJSON, depth int) (Expr, error) {
	if depth > maxExprDepth {
		return nil, errors.New("stored filter is nested too deeply")
	}
	sub := func() (Expr, error) {
		if n.Expr == nil {
			return nil, nil
		}
		return exprFromJSON(*n.Expr, depth+1)
	}
	list := func() ([]Expr, error) {
		out := make([]Expr, 0, len(n.Exprs))
		for _, c := range n.Exprs {
			x, err := exprFromJSON(c, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, x)
		}
		return out, nil
	}
	switch n.Op {
	case "and":
		xs, err := list()
		return And{Exprs: xs}, err
	case "or":
		xs, err := list()
		return Or{Exprs: xs}, err
	case "not":
		x, err := sub()
		if x == nil && err == nil {
			err = errors.New("stored filter: not without operand")
		}
		return Not{Expr: x}, err
	case "match":
		x, err := sub()
		return Match{Param: n.Param, Kind: Kind(n.Kind), Cond: x}, err
	case "part":
		x, err := sub()
		return Part{Index: n.Index, Cond: x}, err
	case "cmp":
		c := Cmp{Field: Field(n.Field), Op: Op(n.CmpOp)}
		switch {
		case n.Str != nil:
			c.Value = *n.Str
		case n.Int != nil:
			c.Value = *n.Int
		case n.Float != nil:
			c.Value = *n.Float
		default:
			return nil, errors.New("stored filter: comparison without value")
		}
		return c, nil
	case "ids":
		return IDs{IDs: n.IDs}, nil
	case "chain":
		x, err := sub()
		return Chain{Param: n.Param, Target: n.Target, Where: x}, err
	case "has":
		x, err := sub()
		return Has{Type: n.Type, Param: n.Param, Where: x}, err
	}
	return nil, fmt.Errorf("stored filter: unknown node %q", n.Op)
}
