// Package rpm owns remote patient monitoring alerts: the thresholds per
// LOINC code (an embedded, documented data file, thresholds.json), the
// per-patient overrides the care team records as FHIR Goals, the alert
// rules (sustained breaches, weight gain), and the commit observer that
// applies them on every write of a vital sign or pain score.
//
// The evaluation is pure: Thresholds.Interpret gives a reading its
// v3-ObservationInterpretation code and referenceRange, Rule.Evaluate
// decides from a sequence of readings (sorted here by effective time, so
// late uploads count where they belong) whether a breach is sustained.
// Observer is the only part that touches storage, and only through
// fhir.CommitSet: it enriches the Observation (interpretation and
// referenceRange, unless the sender set them) and creates or updates the
// Flag and DetectedIssue of the (patient, measure) pair in the SAME
// storage Commit as the reading. That is the durability argument: an
// acknowledged reading always has its derived alert state stored with it,
// and a crash before the Commit leaves neither (there is no queue to lose
// or replay). The one gap is two readings of the same patient and
// measure committed at the same instant: each is evaluated without the
// other, and the Flag catches up with the next reading (see README).
//
// It must not know HTTP, the search syntax or a concrete backend: it reads
// through storage.Backend (queries built from storage.Expr) and writes
// only through the CommitSet. It imports fhir and storage; neither imports it.
package rpm
