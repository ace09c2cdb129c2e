package conformance

import "sort"

// ResourceTypes returns the 146 FHIR R4 resource types, sorted. The caller
// owns the returned slice.
func ResourceTypes() []string {
	out := make([]string, len(resourceTypes))
	copy(out, resourceTypes[:])
	return out
}

// IsResourceType reports whether name is an R4 resource type (case-sensitive,
// as FHIR requires).
func IsResourceType(name string) bool {
	i := sort.SearchStrings(resourceTypes[:], name)
	return i < len(resourceTypes) && resourceTypes[i] == name
}
