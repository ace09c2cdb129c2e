package opioid

// CDC 2022 thresholds of total MME/day: at 50 the guideline asks to pause
// and reassess; the CDC opioid CDS logic treats 90 and above as "taper
// now" and 50-89 as "consider tapering".
const (
	Reassess = 50.0
	High     = 90.0
)

// Level is how a patient's total stands against the thresholds.
type Level int

const (
	LevelBelow    Level = iota // under 50 MME/day
	LevelReassess              // 50-89
	LevelHigh                  // 90 and above
)

// LevelOf places a total MME/day.
func LevelOf(mme float64) Level {
	switch {
	case mme >= High:
		return LevelHigh
	case mme >= Reassess:
		return LevelReassess
	}
	return LevelBelow
}

// Active reports whether a MedicationRequest counts toward the patient's
// current total: status active (draft orders are counted by the caller
// that projects them, as CDS Hooks does).
func Active(req map[string]any) bool { return str(req["status"]) == "active" }

// Request is one computed MedicationRequest of a patient.
type Request struct {
	Ref    string // "MedicationRequest/id" or a draft's id
	Result Result
}

// Summary is a patient's opioid picture over a set of requests.
type Summary struct {
	MME             float64
	Opioids         []Request // requests for an opioid of the table
	Benzodiazepines []Request
	Incomplete      []Request // requests whose MME could not be (fully) computed
}

// Summarize adds up requests (already filtered to the active ones).
func Summarize(reqs []Request) Summary {
	var s Summary
	for _, r := range reqs {
		if r.Result.Opioid {
			s.MME += r.Result.MME
			s.Opioids = append(s.Opioids, r)
		}
		if r.Result.Benzodiazepine {
			s.Benzodiazepines = append(s.Benzodiazepines, r)
		}
		if len(r.Result.Reasons) > 0 {
			s.Incomplete = append(s.Incomplete, r)
		}
	}
	return s
}

// Level is the summary's threshold level.
func (s Summary) Level() Level { return LevelOf(s.MME) }

// Overlap reports an active opioid together with an active benzodiazepine.
func (s Summary) Overlap() bool { return len(s.Opioids) > 0 && len(s.Benzodiazepines) > 0 }
