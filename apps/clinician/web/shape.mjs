// Data shaping for the clinician view: pure functions from FHIR resources
// to what the page draws (series, threshold bands, trends, MME, worklist
// order). No DOM and no network here, so Node's test runner covers it.

export const DAY = 86400000;

export const LOINC = {
  pain: "72514-3",
  pegMean: "91147-9",
  spo2: "2708-6",
  spo2Pulse: "59408-5",
  bp: "85354-9",
  systolic: "8480-6",
  diastolic: "8462-4",
  heartRate: "8867-4",
  glucose: "41653-7",
  weight: "29463-7",
};

// The vitals the patient view charts, with the default alert thresholds
// (published examples gathered in docs/pain-and-rpm: SpO2 below 92 %, heart
// rate outside 50-100 /min, systolic 100-160 and diastolic 60-95 mm[Hg],
// glucose at or below 70 mg/dL). A patient's own Observation.referenceRange
// wins over these.
export const VITALS = [
  { key: "bp", title: "Blood pressure", unit: "mmHg", codes: [LOINC.bp],
    parts: [
      { code: LOINC.systolic, label: "Systolic", low: 100, high: 160 },
      { code: LOINC.diastolic, label: "Diastolic", low: 60, high: 95 },
    ] },
  { key: "spo2", title: "SpO2", unit: "%", codes: [LOINC.spo2, LOINC.spo2Pulse],
    parts: [{ label: "SpO2", low: 92, high: null }] },
  { key: "hr", title: "Heart rate", unit: "/min", codes: [LOINC.heartRate],
    parts: [{ label: "Heart rate", low: 50, high: 100 }] },
  { key: "glucose", title: "Glucose", unit: "mg/dL", codes: [LOINC.glucose, "2339-0", "2345-7"],
    parts: [{ label: "Glucose", low: 70, high: null, lowInclusive: true }] },
  { key: "weight", title: "Weight", unit: "kg", codes: [LOINC.weight],
    parts: [{ label: "Weight", low: null, high: null, gainKg: 1, gainDays: 3 }] },
];

// hasCode says whether a CodeableConcept carries one of the LOINC codes.
export function hasCode(concept, codes) {
  return (concept?.coding ?? []).some(
    (c) => (c.system === "http://loinc.org" || c.system === undefined) && codes.includes(c.code));
}

// numeric is the number of a value[x] (Quantity, integer or decimal), or null.
export function numeric(el) {
  if (!el) return null;
  if (el.valueQuantity && typeof el.valueQuantity.value === "number") return el.valueQuantity.value;
  if (typeof el.valueInteger === "number") return el.valueInteger;
  if (typeof el.valueDecimal === "number") return el.valueDecimal;
  return null;
}

// effectiveTime is the instant an Observation was made (ms), or NaN.
export function effectiveTime(o) {
  const s = o.effectiveDateTime ?? o.effectiveInstant ?? o.effectivePeriod?.start ?? o.issued;
  return s ? Date.parse(s) : NaN;
}

function usable(o) {
  return o && o.resourceType === "Observation" &&
    !["entered-in-error", "cancelled"].includes(o.status);
}

// scoreSeries is the points {t, v, id} of the Observations with one of
// codes whose time lies in [since, until), oldest first.
export function scoreSeries(observations, codes, since = -Infinity, until = Infinity) {
  const out = [];
  for (const o of observations) {
    if (!usable(o) || !hasCode(o.code, codes)) continue;
    const t = effectiveTime(o), v = numeric(o);
    if (Number.isNaN(t) || v === null || t < since || t >= until) continue;
    out.push({ t, v, id: o.id });
  }
  return out.sort((a, b) => a.t - b.t || (a.id < b.id ? -1 : 1));
}

// trend fits a least-squares line to the points of the last windowDays
// before now and calls a change over the window of at least `step`
// points worsening (pain rising) or improving (falling).
export function trend(points, now, windowDays = 14, step = 1) {
  const from = now - windowDays * DAY;
  const pts = points.filter((p) => p.t >= from && p.t <= now + DAY);
  if (pts.length < 3) return { direction: "unknown", change: null, arrow: "?" };
  let sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (const p of pts) {
    const x = (p.t - from) / DAY;
    sx += x; sy += p.v; sxx += x * x; sxy += x * p.v;
  }
  const n = pts.length, den = n * sxx - sx * sx;
  if (den === 0) return { direction: "unknown", change: null, arrow: "?" };
  const change = ((n * sxy - sx * sy) / den) * windowDays;
  if (change >= step) return { direction: "worsening", change, arrow: "↑" };
  if (change <= -step) return { direction: "improving", change, arrow: "↓" };
  return { direction: "stable", change, arrow: "→" };
}

// medianInterval is the median time between consecutive points.
function medianInterval(ts) {
  const d = [];
  for (let i = 1; i < ts.length; i++) d.push(ts[i] - ts[i - 1]);
  if (d.length === 0) return DAY;
  d.sort((a, b) => a - b);
  return d[Math.floor(d.length / 2)];
}

// vitalSeries turns the Observations of one vital into columns for a
// chart: x (seconds, as uPlot wants) and one y column per part. A pause
// longer than twice the device's usual interval (and at least 36 hours)
// becomes a null point, so the line breaks where data is missing.
export function vitalSeries(observations, vital, since = -Infinity) {
  const rows = [];
  for (const o of observations) {
    if (!usable(o) || !hasCode(o.code, vital.codes)) continue;
    const t = effectiveTime(o);
    if (Number.isNaN(t) || t < since) continue;
    const ys = vital.parts.map((p) => {
      if (!p.code) return numeric(o);
      const c = (o.component ?? []).find((c) => hasCode(c.code, [p.code]));
      return c ? numeric(c) : null;
    });
    if (ys.every((y) => y === null)) continue;
    rows.push({ t, ys, ref: o.referenceRange, id: o.id });
  }
  rows.sort((a, b) => a.t - b.t);
  const gap = Math.max(2 * medianInterval(rows.map((r) => r.t)), 1.5 * DAY);
  const x = [], ys = vital.parts.map(() => []), ids = [];
  let readings = 0, gaps = 0;
  for (let i = 0; i < rows.length; i++) {
    if (i > 0 && rows[i].t - rows[i - 1].t > gap) {
      x.push((rows[i - 1].t + rows[i].t) / 2000);
      ys.forEach((col) => col.push(null));
      ids.push(null);
      gaps++;
    }
    x.push(rows[i].t / 1000);
    rows[i].ys.forEach((y, k) => ys[k].push(y));
    ids.push(rows[i].id);
    readings++;
  }
  const bands = vital.parts.map((p) => thresholds(p, rows));
  return { x, ys, ids, readings, gaps, bands, flags: ys.map((col, k) => outOfRange(x, col, bands[k])) };
}

// thresholds is the band of one part: the latest reading's referenceRange
// when it has one (single-valued vitals only: component ranges are not
// read), else the defaults.
export function thresholds(part, rows = []) {
  const band = { low: part.low ?? null, high: part.high ?? null, lowInclusive: !!part.lowInclusive,
    gainKg: part.gainKg ?? null, gainDays: part.gainDays ?? null, source: "default" };
  if (part.code) return band;
  for (let i = rows.length - 1; i >= 0; i--) {
    const rr = rows[i].ref?.[0];
    if (!rr) continue;
    if (typeof rr.low?.value === "number") band.low = rr.low.value;
    if (typeof rr.high?.value === "number") band.high = rr.high.value;
    band.lowInclusive = false;
    band.source = "patient";
    break;
  }
  return band;
}

// isOut says whether one value breaches a band.
export function isOut(v, band) {
  if (v === null || v === undefined) return false;
  if (band.low !== null && (band.lowInclusive ? v <= band.low : v < band.low)) return true;
  if (band.high !== null && v > band.high) return true;
  return false;
}

// outOfRange marks each point of a column that breaches its band; for a
// weight band, a gain of gainKg or more within gainDays.
function outOfRange(x, col, band) {
  return col.map((v, i) => {
    if (v === null) return false;
    if (isOut(v, band)) return true;
    if (band.gainKg !== null) {
      for (let j = i - 1; j >= 0 && x[i] - x[j] <= band.gainDays * 86400; j--) {
        if (col[j] !== null && v - col[j] >= band.gainKg) return true;
      }
    }
    return false;
  });
}

// MME on a MedicationRequest is the server's: an extension whose url names
// MME, with a Quantity or decimal value. null when the server records none.
export function recordedMME(mr) {
  for (const e of mr.extension ?? []) {
    if (!/mme|morphine-milligram/i.test(e.url ?? "")) continue;
    const v = numeric(e);
    if (v !== null) return v;
  }
  return null;
}

// mmeFromOperation reads a $mme answer (a Parameters resource): the total
// and, per prescription, the sum of its contributors' "mme" parts (an
// excluded contributor counts nothing). Older or other servers that name a
// per-request value differently still give the total.
export function mmeFromOperation(params) {
  if (!params || params.resourceType !== "Parameters") return null;
  const out = { total: null, byRequest: {} };
  for (const p of params.parameter ?? []) {
    const name = (p.name ?? "").toLowerCase();
    const v = numeric(p);
    if (v !== null && ["total", "mme", "totalmme", "mme-total", "mmeperday", "total-mme"].includes(name)) out.total = v;
    const parts = p.part ?? [];
    const ref = parts.find((x) => x.valueReference)?.valueReference?.reference;
    if (!ref) continue;
    const mme = parts.find((x) => (x.name ?? "").toLowerCase() === "mme");
    const val = mme ? numeric(mme) : null;
    if (val === null) continue;
    const excluded = parts.some((x) => (x.name ?? "").toLowerCase() === "excluded");
    out.byRequest[ref] = (out.byRequest[ref] ?? 0) + (excluded ? 0 : val);
  }
  return out.total === null && Object.keys(out.byRequest).length === 0 ? null : out;
}

// mmeLevel names the CDC 2022 band of a daily total.
export function mmeLevel(total) {
  if (total === null || total === undefined) return "unknown";
  if (total >= 90) return "high";
  if (total >= 50) return "elevated";
  return "low";
}

// activeAlerts are the patient's Flags (active) and DetectedIssues that
// still hold (neither cancelled nor entered in error, and no end to their
// identified period), with their severity and the references to what
// raised them.
export function activeAlerts(resources) {
  const out = [];
  for (const r of resources) {
    if (r.resourceType === "Flag" && r.status === "active") {
      const prio = (r.extension ?? []).find((e) => /flag-priority/.test(e.url ?? ""));
      const code = prio?.valueCodeableConcept?.coding?.[0]?.code;
      out.push({ resource: r, high: code === "PH" || code === "high", text: r.code?.text ?? r.code?.coding?.[0]?.display ?? "Flag", evidence: alertEvidence(r) });
    } else if (r.resourceType === "DetectedIssue" && !["cancelled", "entered-in-error"].includes(r.status) && !r.identifiedPeriod?.end) {
      out.push({ resource: r, high: r.severity === "high", text: r.detail ?? r.code?.text ?? r.code?.coding?.[0]?.display ?? "Detected issue", evidence: alertEvidence(r) });
    }
  }
  return out;
}

// localRef turns a reference into "Type/id" (a server's absolute URL too).
export function localRef(ref) {
  const m = /([A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64})$/.exec(ref ?? "");
  return m ? m[1] : null;
}

// alertEvidence lists, once each, what an alert names as its cause: a
// Flag's flag-detail extensions, a DetectedIssue's implicated resources and
// evidence details.
export function alertEvidence(r) {
  const refs = [
    ...(r.extension ?? []).filter((e) => /flag-detail/.test(e.url ?? "")).map((e) => e.valueReference?.reference),
    ...(r.implicated ?? []).map((x) => x.reference),
    ...(r.evidence ?? []).flatMap((e) => (e.detail ?? []).map((x) => x.reference)),
  ].map(localRef).filter(Boolean);
  return [...new Set(refs)];
}

// readingValue is an Observation's value as the clinician reads it:
// "128/82 mmHg" for a panel of components, "89 %" for a quantity.
export function readingValue(o) {
  const one = (el) => {
    const v = numeric(el);
    if (v === null) return el.valueCodeableConcept?.text ?? el.valueString ?? null;
    return String(v);
  };
  const unit = (el) => el.valueQuantity?.unit ?? el.valueQuantity?.code ?? "";
  if (o.component?.length && numeric(o) === null) {
    const vals = o.component.map(one).filter((v) => v !== null);
    if (vals.length === 0) return "—";
    const units = [...new Set(o.component.map(unit).filter(Boolean))];
    return vals.join("/") + (units.length === 1 ? " " + units[0] : "");
  }
  const v = one(o);
  if (v === null) return "—";
  const u = unit(o);
  return u && !u.startsWith("{") ? `${v} ${u}` : v;
}

// abnormal says whether the server interpreted a reading as out of range
// (interpretation other than N), or null when it gave none.
export function abnormal(o) {
  const codes = (o.interpretation ?? []).flatMap((i) => (i.coding ?? []).map((c) => c.code)).filter(Boolean);
  if (codes.length === 0) return null;
  return codes.some((c) => c !== "N");
}

// LATEST_ORDER is the order of the latest-readings table: pain first,
// then the charted vitals; other codes follow, newest first.
const LATEST_ORDER = [LOINC.pain, LOINC.pegMean, LOINC.bp, LOINC.spo2, LOINC.spo2Pulse, LOINC.heartRate, LOINC.glucose, LOINC.weight];

// latestReadings shapes a $lastn answer (max=1: the newest reading per
// code) into rows {id, label, value, t, abnormal}.
export function latestReadings(observations) {
  const rank = (o) => {
    const i = (o.code?.coding ?? []).map((c) => LATEST_ORDER.indexOf(c.code)).filter((x) => x >= 0);
    return i.length ? Math.min(...i) : LATEST_ORDER.length;
  };
  return observations
    .filter((o) => o.resourceType === "Observation" && !["entered-in-error", "cancelled"].includes(o.status))
    .map((o) => ({ o, r: rank(o), t: effectiveTime(o) }))
    .sort((a, b) => a.r - b.r || (b.t || 0) - (a.t || 0))
    .map(({ o, t }) => ({
      id: o.id,
      label: o.code?.text ?? o.code?.coding?.[0]?.display ?? o.code?.coding?.[0]?.code ?? "Observation",
      value: readingValue(o), t, abnormal: abnormal(o),
    }));
}

// subjectId is the Patient id a resource is about.
export function subjectId(r) {
  const ref = r.subject?.reference ?? r.patient?.reference ?? "";
  const m = /(?:^|\/)Patient\/([^/]+)$/.exec(ref);
  return m ? m[1] : null;
}

// worklistOrder sorts rows {name, highAlerts, alerts, trend, lastReading}
// by what needs attention: high-severity alerts, then any alerts, then a
// worsening pain trend, then the longest time without a reading.
export function worklistOrder(rows) {
  const worse = (r) => (r.trend?.direction === "worsening" ? 1 : 0);
  return [...rows].sort((a, b) =>
    b.highAlerts - a.highAlerts ||
    b.alerts - a.alerts ||
    worse(b) - worse(a) ||
    (a.lastReading ?? -Infinity) - (b.lastReading ?? -Infinity) ||
    (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

// patientName is a display name of a Patient.
export function patientName(p) {
  const n = p?.name?.find((x) => x.use === "official") ?? p?.name?.[0];
  if (!n) return p?.id ?? "Unknown";
  if (n.text) return n.text;
  return [...(n.given ?? []), n.family].filter(Boolean).join(" ") || p.id;
}
