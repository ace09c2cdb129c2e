package fhirpath

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"strings"
)

// xmlElem is a generic FHIR XML element.
type xmlElem struct {
	name     string
	attrs    map[string]string
	children []*xmlElem
	raw      string // the serialized content of an xhtml div
}

// readXML parses FHIR XML into a tree; xhtml divs are kept as text.
func readXML(r io.Reader) (*xmlElem, error) {
	dec := xml.NewDecoder(r)
	var stack []*xmlElem
	var root *xmlElem
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read FHIR XML: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			e := &xmlElem{name: t.Name.Local, attrs: map[string]string{}}
			for _, a := range t.Attr {
				e.attrs[a.Name.Local] = a.Value
			}
			if t.Name.Space == "http://www.w3.org/1999/xhtml" {
				var sb strings.Builder
				if err := copyXHTML(dec, t, &sb); err != nil {
					return nil, err
				}
				e.raw = sb.String()
				if len(stack) > 0 {
					stack[len(stack)-1].children = append(stack[len(stack)-1].children, e)
				}
				continue
			}
			if len(stack) > 0 {
				stack[len(stack)-1].children = append(stack[len(stack)-1].children, e)
			} else {
				root = e
			}
			stack = append(stack, e)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		}
	}
	if root == nil {
		return nil, fmt.Errorf("read FHIR XML: no root element")
	}
	return root, nil
}

// copyXHTML re-serializes the xhtml subtree whose start tag was just read.
func copyXHTML(dec *xml.Decoder, start xml.StartElement, sb *strings.Builder) error {
	depth := 0
	writeStart := func(t xml.StartElement) {
		sb.WriteString("<" + t.Name.Local)
		if depth == 0 {
			sb.WriteString(` xmlns="http://www.w3.org/1999/xhtml"`)
		}
		for _, a := range t.Attr {
			if a.Name.Local == "xmlns" {
				continue
			}
			fmt.Fprintf(sb, " %s=%q", a.Name.Local, a.Value)
		}
		sb.WriteString(">")
	}
	writeStart(start)
	depth++
	for depth > 0 {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("read xhtml: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			writeStart(t)
			depth++
		case xml.EndElement:
			sb.WriteString("</" + t.Name.Local + ">")
			depth--
		case xml.CharData:
			xml.EscapeText(sb, t)
		}
	}
	return nil
}

// fhirXMLToJSON converts a FHIR XML resource into the JSON form FHIRPath
// evaluates, using the R4 model for cardinality and primitive types.
func fhirXMLToJSON(m *Model, root *xmlElem) (map[string]any, error) {
	obj := map[string]any{"resourceType": root.name}
	if err := fillObject(m, root.name, root, obj); err != nil {
		return nil, err
	}
	return obj, nil
}

func fillObject(m *Model, typ string, e *xmlElem, obj map[string]any) error {
	for _, c := range e.children {
		_, ctype, many, known := m.Property(typ, c.name)
		if !known {
			return fmt.Errorf("unknown element %s.%s", typ, c.name)
		}
		var val, ext any
		switch {
		case ctype == "Resource":
			if len(c.children) != 1 {
				return fmt.Errorf("%s.%s: expected one resource", typ, c.name)
			}
			r, err := fhirXMLToJSON(m, c.children[0])
			if err != nil {
				return err
			}
			val = r
		case ctype == "xhtml":
			val = c.raw
		case m.IsPrimitive(ctype):
			if v, ok := c.attrs["value"]; ok {
				val = primitiveJSON(ctype, v)
			}
			if len(c.children) > 0 || c.attrs["id"] != "" {
				x := map[string]any{}
				if id := c.attrs["id"]; id != "" {
					x["id"] = id
				}
				if err := fillObject(m, ctype, c, x); err != nil {
					return err
				}
				ext = x
			}
		default:
			o := map[string]any{}
			if id := c.attrs["id"]; id != "" {
				o["id"] = id
			}
			if u := c.attrs["url"]; u != "" {
				o["url"] = u
			}
			if err := fillObject(m, ctype, c, o); err != nil {
				return err
			}
			val = o
		}
		if !many {
			if val != nil {
				obj[c.name] = val
			}
			if ext != nil {
				obj["_"+c.name] = ext
			}
			continue
		}
		arr, _ := obj[c.name].([]any)
		xarr, _ := obj["_"+c.name].([]any)
		n := max(len(arr), len(xarr))
		for len(arr) < n {
			arr = append(arr, nil)
		}
		for len(xarr) < n {
			xarr = append(xarr, nil)
		}
		arr = append(arr, val)
		xarr = append(xarr, ext)
		obj[c.name] = arr
		hasExt := false
		for _, x := range xarr {
			hasExt = hasExt || x != nil
		}
		if hasExt {
			obj["_"+c.name] = xarr
		}
	}
	// Arrays of only nulls mean the values were all absent.
	for k, v := range obj {
		if arr, ok := v.([]any); ok && !strings.HasPrefix(k, "_") {
			allNil := true
			for _, x := range arr {
				allNil = allNil && x == nil
			}
			if allNil {
				delete(obj, k)
			}
		}
	}
	return nil
}

func primitiveJSON(typ, v string) any {
	switch typ {
	case "boolean":
		return v == "true"
	case "integer", "positiveInt", "unsignedInt", "decimal":
		return json.Number(v)
	}
	return v
}
