package fhir

// SetLastNProbe sets the page $lastn groups in memory, so that tests can
// drive the seeking strategy with little data.
func (s *Server) SetLastNProbe(n int) { s.lastnProbe = n }
