package profile

import (
	"context"
	"fmt"
	"strings"
)

// Snapshot generation: a differential is applied, element by element in
// its order, to a copy of the base definition's snapshot. An element the
// base does not unfold yet (Observation.code.coding under a CodeableConcept)
// is reached by unfolding its parent from the parent's type definition; a
// slice is a copy of the sliced element and its descendants, placed after
// the sliced element's last slice; a choice named for one type
// (valueQuantity) becomes a type slice of value[x] when value[x] allows
// several types, and value[x] itself when it allows only that one.

type snapshotter struct {
	ctx   context.Context
	r     *Registry
	url   string
	elems []map[string]any
	index map[string]int // id -> position, rebuilt after inserts
}

// generateSnapshot returns sd with a snapshot derived from its
// differential and base. sd is not modified.
func (r *Registry) generateSnapshot(ctx context.Context, sd map[string]any, depth int) (map[string]any, error) {
	url, _ := sd["url"].(string)
	baseURL, _ := sd["baseDefinition"].(string)
	if baseURL == "" {
		return nil, fmt.Errorf("StructureDefinition %s has a differential but no baseDefinition", url)
	}
	base, err := r.definition(ctx, baseURL, depth+1)
	if err != nil {
		return nil, fmt.Errorf("StructureDefinition %s: base %s: %w", url, baseURL, err)
	}
	baseEls, _ := base.JSON["snapshot"].(map[string]any)["element"].([]any)
	s := &snapshotter{ctx: ctx, r: r, url: url}
	for _, e := range baseEls {
		s.elems = append(s.elems, deepCopy(e).(map[string]any))
	}
	s.reindex()
	diff, _ := sd["differential"].(map[string]any)
	dels, _ := diff["element"].([]any)
	ids := diffIDs(dels)
	rootType, _ := s.elems[0]["path"].(string)
	for i, d := range dels {
		dm, ok := d.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("StructureDefinition %s: differential.element[%d] is not an object", url, i)
		}
		id := ids[i]
		if first, _, _ := strings.Cut(id, "."); strings.Split(first, ":")[0] != rootType {
			return nil, fmt.Errorf("StructureDefinition %s: differential element %q is not within %s", url, id, rootType)
		}
		pos, err := s.resolve(id, typeCodes(dm), depth)
		if err != nil {
			return nil, fmt.Errorf("StructureDefinition %s: differential element %q: %w", url, id, err)
		}
		merge(s.elems[pos], dm)
	}
	out := map[string]any{}
	for k, v := range sd {
		out[k] = v
	}
	snap := make([]any, len(s.elems))
	for i, e := range s.elems {
		snap[i] = e
	}
	out["snapshot"] = map[string]any{"element": snap}
	return out, nil
}

// diffIDs gives each differential element its id: its own, or one built
// from its path and the slices opened before it (R4 allows differentials
// without ids; the elements after a slice belong to it).
func diffIDs(dels []any) []string {
	ids := make([]string, len(dels))
	open := map[string]string{} // path -> id of the slice currently open at that path
	for i, d := range dels {
		dm, _ := d.(map[string]any)
		if id, _ := dm["id"].(string); id != "" {
			ids[i] = id
			continue
		}
		path, _ := dm["path"].(string)
		segs := strings.Split(path, ".")
		id := ""
		for j := range segs {
			p := strings.Join(segs[:j+1], ".")
			seg := segs[j]
			if sid, ok := open[p]; ok && j < len(segs)-1 {
				id = sid
				continue
			}
			id = joinID(id, seg)
		}
		if sn, _ := dm["sliceName"].(string); sn != "" {
			id += ":" + sn
			open[path] = id
		}
		ids[i] = id
	}
	return ids
}

func (s *snapshotter) reindex() {
	s.index = make(map[string]int, len(s.elems))
	for i, e := range s.elems {
		id, _ := e["id"].(string)
		if id == "" {
			id, _ = e["path"].(string)
			e["id"] = id
		}
		s.index[id] = i
	}
}

// resolve finds (creating slices and unfolding types as needed) the
// snapshot element a differential id designates and returns its position.
//
// diffTypes are the types the differential element lists: a choice named
// for one type (valueQuantity) whose element lists just that type narrows
// value[x] itself, as HL7's generator does, instead of slicing it.
func (s *snapshotter) resolve(id string, diffTypes []string, depth int) (int, error) {
	segs := strings.Split(id, ".")
	cur := segs[0]
	if _, ok := s.index[cur]; !ok {
		return 0, fmt.Errorf("root %q not in the base", cur)
	}
	for i, seg := range segs[1:] {
		last := i == len(segs)-2
		name, slice, _ := strings.Cut(seg, ":")
		if name == "" {
			return 0, fmt.Errorf("empty element name in %q", id)
		}
		if err := s.unfold(cur, depth); err != nil {
			return 0, err
		}
		next := cur + "." + name
		if _, ok := s.index[next]; !ok {
			// valueQuantity for value[x]
			choice, typ := s.choiceFor(cur, name)
			if choice == "" {
				return 0, fmt.Errorf("no element %q in %s", name, cur)
			}
			next = choice
			if types := typeCodes(s.elems[s.index[choice]]); len(types) > 1 && !(last && len(diffTypes) == 1 && diffTypes[0] == typ) {
				if err := s.ensureTypeSlice(choice, name, typ); err != nil {
					return 0, err
				}
				next = choice + ":" + name
			}
		}
		if slice != "" {
			sid := next + ":" + slice
			if _, ok := s.index[sid]; !ok {
				from := next
				if i := strings.LastIndexByte(slice, '/'); i > 0 {
					// A reslice ("mrn/local") is a copy of the slice it refines.
					from = next + ":" + slice[:i]
					if _, ok := s.index[from]; !ok {
						return 0, fmt.Errorf("reslice %s refines no slice %s", sid, from)
					}
				}
				s.addSlice(from, sid, slice)
			}
			next = sid
		}
		cur = next
	}
	return s.index[cur], nil
}

// choiceFor maps "valueQuantity" under parent to ("parent.value[x]", "Quantity").
func (s *snapshotter) choiceFor(parent, name string) (string, string) {
	for i := range name {
		if i == 0 || name[i] < 'A' || name[i] > 'Z' {
			continue
		}
		cid := parent + "." + name[:i] + "[x]"
		pos, ok := s.index[cid]
		if !ok {
			continue
		}
		for _, t := range typeCodes(s.elems[pos]) {
			if upperFirst(t) == name[i:] {
				return cid, t
			}
		}
	}
	return "", ""
}

func typeCodes(e map[string]any) []string {
	ts, _ := e["type"].([]any)
	var out []string
	for _, t := range ts {
		tm, _ := t.(map[string]any)
		if c, _ := tm["code"].(string); c != "" {
			out = append(out, c)
		}
	}
	return out
}

// ensureTypeSlice makes value[x] sliced by type and adds the slice for one type.
func (s *snapshotter) ensureTypeSlice(choice, sliceName, typ string) error {
	e := s.elems[s.index[choice]]
	if _, ok := e["slicing"]; !ok {
		e["slicing"] = map[string]any{
			"discriminator": []any{map[string]any{"type": "type", "path": "$this"}},
			"ordered":       false, "rules": "closed",
		}
	}
	sid := choice + ":" + sliceName
	if _, ok := s.index[sid]; ok {
		return nil
	}
	s.addSlice(choice, sid, sliceName)
	sl := s.elems[s.index[sid]]
	var kept []any
	for _, t := range sl["type"].([]any) {
		if tm, _ := t.(map[string]any); tm["code"] == typ {
			kept = append(kept, t)
		}
	}
	sl["type"] = kept
	return nil
}

// addSlice copies the element base (a sliced element, or the slice a
// reslice refines) and its descendants as the slice sliceID named name,
// after base's subtree and its existing slices and reslices.
func (s *snapshotter) addSlice(baseID, sliceID, name string) {
	pos := s.index[baseID]
	end := pos + 1
	var copies []map[string]any
	for ; end < len(s.elems); end++ {
		id, _ := s.elems[end]["id"].(string)
		if !strings.HasPrefix(id, baseID+".") && !strings.HasPrefix(id, baseID+":") && !strings.HasPrefix(id, baseID+"/") {
			break
		}
		if strings.HasPrefix(id, baseID+".") {
			c := deepCopy(s.elems[end]).(map[string]any)
			c["id"] = sliceID + strings.TrimPrefix(id, baseID)
			copies = append(copies, c)
		}
	}
	sl := deepCopy(s.elems[pos]).(map[string]any)
	delete(sl, "slicing")
	sl["id"] = sliceID
	sl["sliceName"] = name
	sl["min"] = jsonInt(0)
	ins := append([]map[string]any{sl}, copies...)
	s.elems = append(s.elems[:end], append(ins, s.elems[end:]...)...)
	s.reindex()
}

// unfold adds the children of element id from its type's definition when
// the snapshot does not have them yet.
func (s *snapshotter) unfold(id string, depth int) error {
	pos := s.index[id]
	if pos+1 < len(s.elems) {
		if nid, _ := s.elems[pos+1]["id"].(string); strings.HasPrefix(nid, id+".") {
			return nil
		}
	}
	e := s.elems[pos]
	path, _ := e["path"].(string)
	var src []any
	var srcRoot string
	if ref, _ := e["contentReference"].(string); ref != "" {
		target := strings.TrimPrefix(ref, "#")
		var sub []any
		for _, x := range s.elems {
			xid, _ := x["id"].(string)
			if strings.HasPrefix(xid, target+".") {
				sub = append(sub, x)
			}
		}
		src, srcRoot = sub, target
	} else {
		types, _ := e["type"].([]any)
		if len(types) != 1 {
			return fmt.Errorf("cannot unfold %s: it has %d types", id, len(types))
		}
		tm, _ := types[0].(map[string]any)
		code, _ := tm["code"].(string)
		url := coreURL(code)
		if ps := strings1(tm["profile"]); len(ps) == 1 && code != "Extension" {
			url = ps[0]
		}
		td, err := s.r.definition(s.ctx, url, depth+1)
		if err != nil {
			return fmt.Errorf("cannot unfold %s: %w", id, err)
		}
		els, _ := td.JSON["snapshot"].(map[string]any)["element"].([]any)
		if len(els) > 0 {
			src = els[1:]
			srcRoot, _ = els[0].(map[string]any)["id"].(string)
		}
	}
	var ins []map[string]any
	for _, x := range src {
		c := deepCopy(x).(map[string]any)
		xid, _ := c["id"].(string)
		xpath, _ := c["path"].(string)
		c["id"] = id + strings.TrimPrefix(xid, srcRoot)
		rootPath := strings.Split(srcRoot, ":")[0]
		c["path"] = path + strings.TrimPrefix(xpath, rootPath)
		ins = append(ins, c)
	}
	s.elems = append(s.elems[:pos+1], append(ins, s.elems[pos+1:]...)...)
	s.reindex()
	return nil
}

// merge applies a differential element to a snapshot element: the
// differential's values replace the base's, constraints add up.
func merge(dst, diff map[string]any) {
	for k, v := range diff {
		switch k {
		case "id", "path":
		case "constraint":
			have := map[string]bool{}
			list, _ := dst["constraint"].([]any)
			for _, c := range list {
				if cm, ok := c.(map[string]any); ok {
					have[fmt.Sprint(cm["key"])] = true
				}
			}
			for _, c := range v.([]any) {
				if cm, ok := c.(map[string]any); ok && !have[fmt.Sprint(cm["key"])] {
					list = append(list, deepCopy(c))
				}
			}
			dst["constraint"] = list
		default:
			if strings.HasPrefix(k, "fixed") || strings.HasPrefix(k, "pattern") {
				for dk := range dst {
					if strings.HasPrefix(dk, "fixed") || strings.HasPrefix(dk, "pattern") {
						delete(dst, dk)
					}
				}
			}
			dst[k] = deepCopy(v)
		}
	}
}

func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}

func coreURL(typ string) string { return "http://hl7.org/fhir/StructureDefinition/" + typ }
