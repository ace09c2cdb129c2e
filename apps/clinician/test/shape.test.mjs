// Tests of the clinician app's data shaping, run with `node --test`.
// Expected values are worked out by hand in the comments, not by the code.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  DAY, LOINC, VITALS, scoreSeries, trend, vitalSeries, thresholds, isOut,
  recordedMME, mmeFromOperation, mmeLevel, activeAlerts, worklistOrder, patientName, subjectId,
  alertEvidence, localRef, readingValue, abnormal, latestReadings,
} from "../web/shape.mjs";

const T0 = Date.parse("2026-11-01T00:00:00Z");
const obs = (id, code, day, value, extra = {}) => ({
  resourceType: "Observation", id, status: "final",
  code: { coding: [{ system: "http://loinc.org", code }] },
  subject: { reference: "Patient/p1" },
  effectiveDateTime: new Date(T0 + day * DAY).toISOString(),
  ...(value === undefined ? {} : { valueQuantity: { value, code: "{score}" } }),
  ...extra,
});
const vital = (key) => VITALS.find((v) => v.key === key);

test("scoreSeries keeps the code, the range and usable statuses, oldest first", () => {
  const list = [
    obs("c", LOINC.pain, 3, 5),
    obs("a", LOINC.pain, 1, 7),
    obs("x", LOINC.spo2, 2, 95),                                   // other code
    obs("e", LOINC.pain, 2, 9, { status: "entered-in-error" }),    // withdrawn
    obs("n", LOINC.pain, 2, undefined),                            // no value
    obs("i", LOINC.pain, 4, undefined, { valueInteger: 4 }),
    obs("old", LOINC.pain, -10, 2),                                // before since
  ];
  const s = scoreSeries(list, [LOINC.pain], T0);
  assert.deepEqual(s.map((p) => [p.id, p.v]), [["a", 7], ["c", 5], ["i", 4]]);
  assert.equal(scoreSeries(list, [LOINC.pain]).length, 4);
});

test("trend: the fitted change over the window decides the arrow", () => {
  const now = T0 + 14 * DAY;
  // 0, 0.1, ... 1.3 per day: a rise of 0.1/day, 1.4 over 14 days.
  const rising = Array.from({ length: 14 }, (_, d) => ({ t: T0 + d * DAY, v: d * 0.1 }));
  const r = trend(rising, now);
  assert.equal(r.direction, "worsening");
  assert.equal(r.arrow, "↑");
  assert.ok(Math.abs(r.change - 1.4) < 1e-9, String(r.change));
  // Falling by 0.2/day: -2.8 over 14 days.
  const falling = rising.map((p) => ({ t: p.t, v: 8 - 2 * p.v }));
  assert.equal(trend(falling, now).direction, "improving");
  assert.ok(Math.abs(trend(falling, now).change + 2.8) < 1e-9);
  // Alternating 4/6: slope of alternation over 14 points is small.
  const flat = rising.map((p, i) => ({ t: p.t, v: i % 2 ? 6 : 4 }));
  assert.equal(trend(flat, now).direction, "stable");
  // Points older than the window do not count; two points are too few.
  assert.equal(trend([{ t: T0, v: 1 }, { t: T0 + DAY, v: 9 }], now).direction, "unknown");
  assert.equal(trend(rising.map((p) => ({ t: p.t - 30 * DAY, v: p.v })), now).direction, "unknown");
});

test("vitalSeries: blood pressure components, gaps as nulls, breaches marked", () => {
  const bp = (id, day, sys, dia) => obs(id, LOINC.bp, day, undefined, {
    component: [
      { code: { coding: [{ system: "http://loinc.org", code: LOINC.systolic }] }, valueQuantity: { value: sys } },
      { code: { coding: [{ system: "http://loinc.org", code: LOINC.diastolic }] }, valueQuantity: { value: dia } },
    ],
  });
  // Daily readings on days 0,1,2 then a pause to day 6, then day 7.
  const list = [bp("a", 0, 120, 80), bp("b", 1, 125, 82), bp("c", 2, 170, 99), bp("d", 6, 118, 55), bp("e", 7, 121, 79)];
  const s = vitalSeries(list, vital("bp"));
  assert.equal(s.readings, 5);
  assert.equal(s.gaps, 1);
  assert.equal(s.x.length, 6);
  assert.deepEqual(s.ys[0], [120, 125, 170, null, 118, 121]);
  assert.deepEqual(s.ys[1], [80, 82, 99, null, 55, 79]);
  // The null sits between day 2 and day 6: day 4, in seconds.
  assert.equal(s.x[3], (T0 + 4 * DAY) / 1000);
  // Systolic 170 > 160; diastolic 99 > 95 and 55 < 60.
  assert.deepEqual(s.flags[0], [false, false, true, false, false, false]);
  assert.deepEqual(s.flags[1], [false, false, true, false, true, false]);
});

test("vitalSeries: SpO2 by either code, the patient's referenceRange wins", () => {
  const list = [
    obs("a", LOINC.spo2, 0, 93),
    obs("b", LOINC.spo2Pulse, 1, 91),
    obs("c", LOINC.spo2, 2, 89, { referenceRange: [{ low: { value: 90 } }] }),
  ];
  const s = vitalSeries(list, vital("spo2"));
  assert.deepEqual(s.ys[0], [93, 91, 89]);
  assert.equal(s.bands[0].low, 90);
  assert.equal(s.bands[0].source, "patient");
  assert.deepEqual(s.flags[0], [false, false, true]);
  const d = vitalSeries(list.slice(0, 2), vital("spo2"));
  assert.equal(d.bands[0].low, 92);
  assert.deepEqual(d.flags[0], [false, true]);
});

test("thresholds and isOut: defaults from the RPM examples", () => {
  const hr = thresholds(vital("hr").parts[0]);
  assert.deepEqual([hr.low, hr.high], [50, 100]);
  assert.equal(isOut(101, hr), true);
  assert.equal(isOut(100, hr), false);
  assert.equal(isOut(49, hr), true);
  const glu = thresholds(vital("glucose").parts[0]);
  assert.equal(isOut(70, glu), true); // level 1 hypoglycaemia is <= 70
  assert.equal(isOut(71, glu), false);
  assert.equal(isOut(null, glu), false);
});

test("weight: a gain of 1 kg within 3 days is marked", () => {
  const list = [obs("a", LOINC.weight, 0, 80), obs("b", LOINC.weight, 1, 80.4), obs("c", LOINC.weight, 2, 81.1), obs("d", LOINC.weight, 6, 81.5)];
  const s = vitalSeries(list, vital("weight"));
  // c is 1.1 above a two days earlier; d is 0.4 above c (4 days): only c.
  assert.equal(s.gaps, 1);
  assert.deepEqual(s.flags[0].filter((_, i) => s.ys[0][i] !== null), [false, false, true, false]);
});

test("MME: read from the server, never computed here", () => {
  assert.equal(recordedMME({ extension: [{ url: "http://example.org/x", valueDecimal: 3 }] }), null);
  assert.equal(recordedMME({ extension: [{ url: "http://anodyne.example/StructureDefinition/mme-per-day", valueQuantity: { value: 45 } }] }), 45);
  assert.equal(recordedMME({}), null);
  const op = mmeFromOperation({ resourceType: "Parameters", parameter: [
    { name: "total", valueQuantity: { value: 135 } },
    { name: "medication", part: [{ name: "request", valueReference: { reference: "MedicationRequest/m1" } }, { name: "mme", valueDecimal: 120 }] },
  ] });
  assert.equal(op.total, 135);
  assert.deepEqual(op.byRequest, { "MedicationRequest/m1": 120 });
  assert.equal(mmeFromOperation({ resourceType: "OperationOutcome" }), null);
  assert.deepEqual([mmeLevel(49.9), mmeLevel(50), mmeLevel(89), mmeLevel(90), mmeLevel(null)], ["low", "elevated", "elevated", "high", "unknown"]);
});

test("alerts: active Flags and live DetectedIssues, high severity told apart", () => {
  const a = activeAlerts([
    { resourceType: "Flag", status: "active", code: { text: "SpO2 low 3 days" } },
    { resourceType: "Flag", status: "inactive", code: { text: "old" } },
    { resourceType: "DetectedIssue", status: "final", severity: "high", detail: "MME above 90" },
    { resourceType: "DetectedIssue", status: "cancelled", severity: "high" },
    { resourceType: "Observation" },
  ]);
  assert.deepEqual(a.map((x) => [x.text, x.high]), [["SpO2 low 3 days", false], ["MME above 90", true]]);
});

test("worklistOrder: high alerts, alerts, worsening, then longest silence", () => {
  const rows = [
    { name: "quiet-recent", highAlerts: 0, alerts: 0, trend: { direction: "stable" }, lastReading: 1000 },
    { name: "worse", highAlerts: 0, alerts: 0, trend: { direction: "worsening" }, lastReading: 2000 },
    { name: "high", highAlerts: 1, alerts: 1, trend: { direction: "improving" }, lastReading: 3000 },
    { name: "flagged", highAlerts: 0, alerts: 2, trend: { direction: "stable" }, lastReading: 3000 },
    { name: "silent", highAlerts: 0, alerts: 0, trend: { direction: "stable" }, lastReading: 10 },
    { name: "never", highAlerts: 0, alerts: 0, trend: { direction: "unknown" }, lastReading: null },
  ];
  assert.deepEqual(worklistOrder(rows).map((r) => r.name), ["high", "flagged", "worse", "never", "silent", "quiet-recent"]);
});

test("names and subjects", () => {
  assert.equal(patientName({ name: [{ use: "usual", given: ["Jo"] }, { use: "official", given: ["Maria"], family: "Alvarez" }] }), "Maria Alvarez");
  assert.equal(patientName({ id: "x" }), "x");
  assert.equal(subjectId({ subject: { reference: "Patient/demo-p03" } }), "demo-p03");
  assert.equal(subjectId({ patient: { reference: "http://h/fhir/Patient/p9" } }), "p9");
  assert.equal(subjectId({ subject: { reference: "Group/g" } }), null);
});

test("MME per prescription: the sum of its contributors' mme, excluded ones count nothing", () => {
  // The Patient/$mme answer as clinical/opioidsafety writes it.
  const ref = (id) => ({ name: "medicationRequest", valueReference: { reference: `MedicationRequest/${id}` } });
  const contributor = (id, mme, extra = []) => ({ name: "contributor", part: [
    ref(id), { name: "ingredient", valueCoding: { code: "7052" } },
    { name: "dailyDose", valueQuantity: { value: 60, unit: "mg" } }, // not the MME
    { name: "factor", valueDecimal: 1.5 }, { name: "mme", valueDecimal: mme }, ...extra] });
  const op = mmeFromOperation({ resourceType: "Parameters", parameter: [
    { name: "total", valueDecimal: 135 },
    { name: "level", valueCode: "90-or-more" },
    contributor("m1", 90), contributor("m1", 30),           // a combination product: 90 + 30
    contributor("m2", 15),
    contributor("m3", 40, [{ name: "excluded", valueString: "buprenorphine for OUD" }]),
    { name: "notComputed", part: [ref("m4"), { name: "reason", valueString: "no dose" }] },
  ] });
  assert.equal(op.total, 135);
  assert.deepEqual(op.byRequest, { "MedicationRequest/m1": 120, "MedicationRequest/m2": 15, "MedicationRequest/m3": 0 });
});

test("alerts: a DetectedIssue whose identified period ended no longer holds; evidence listed once", () => {
  const flag = { resourceType: "Flag", id: "spo2-p1", status: "active", code: { text: "SpO2 out of range" },
    extension: [
      { url: "http://hl7.org/fhir/StructureDefinition/flag-priority", valueCodeableConcept: { coding: [{ code: "PH" }] } },
      { url: "http://hl7.org/fhir/StructureDefinition/flag-detail", valueReference: { reference: "Observation/o1" } },
      { url: "http://hl7.org/fhir/StructureDefinition/flag-detail", valueReference: { reference: "https://ehr.example/fhir/Observation/o2" } },
      { url: "http://hl7.org/fhir/StructureDefinition/flag-detail", valueReference: { reference: "Observation/o1" } },
    ] };
  const live = { resourceType: "DetectedIssue", id: "spo2-p1", status: "final", severity: "high", detail: "Sustained critical SpO2",
    identifiedPeriod: { start: "2026-11-01T00:00:00Z" },
    implicated: [{ reference: "Observation/o2" }, { reference: "Observation/o3" }],
    evidence: [{ detail: [{ reference: "Flag/spo2-p1" }] }] };
  const ended = { ...live, id: "hr-p1", identifiedPeriod: { start: "2026-10-01T00:00:00Z", end: "2026-10-03T00:00:00Z" } };
  const a = activeAlerts([flag, live, ended]);
  assert.deepEqual(a.map((x) => [x.resource.id, x.resource.resourceType, x.high]), [["spo2-p1", "Flag", true], ["spo2-p1", "DetectedIssue", true]]);
  assert.deepEqual(a[0].evidence, ["Observation/o1", "Observation/o2"]);
  assert.deepEqual(alertEvidence(live), ["Observation/o2", "Observation/o3", "Flag/spo2-p1"]);
  assert.deepEqual([localRef("Observation/x-1"), localRef("http://s/fhir/Flag/f.2"), localRef("#contained"), localRef(undefined)],
    ["Observation/x-1", "Flag/f.2", null, null]);
});

test("readingValue and abnormal: panels as systolic/diastolic, units, the server's interpretation", () => {
  const bp = { resourceType: "Observation", code: {}, component: [
    { code: {}, valueQuantity: { value: 128, unit: "mmHg" } }, { code: {}, valueQuantity: { value: 82, unit: "mmHg" } }],
    interpretation: [{ coding: [{ code: "N" }] }] };
  const spo2 = { resourceType: "Observation", code: {}, valueQuantity: { value: 89, unit: "%" }, interpretation: [{ coding: [{ code: "L" }] }] };
  const pain = { resourceType: "Observation", code: {}, valueQuantity: { value: 7, code: "{score}" } };
  const integer = { resourceType: "Observation", code: {}, valueInteger: 4 };
  assert.deepEqual([readingValue(bp), readingValue(spo2), readingValue(pain), readingValue(integer), readingValue({ code: {} })],
    ["128/82 mmHg", "89 %", "7", "4", "—"]);
  assert.deepEqual([abnormal(bp), abnormal(spo2), abnormal(pain)], [false, true, null]);
});

test("latestReadings: pain first, then the charted vitals, then other codes newest first; withdrawn dropped", () => {
  const list = [
    obs("w", LOINC.weight, 5, 80),
    obs("x1", "1234-5", 2, 1, { code: { text: "Other old", coding: [{ system: "http://loinc.org", code: "1234-5" }] } }),
    obs("x2", "2345-6", 4, 1, { code: { text: "Other new", coding: [{ system: "http://loinc.org", code: "2345-6" }] } }),
    obs("p", LOINC.pain, 1, 6, { code: { text: "Pain", coding: [{ system: "http://loinc.org", code: LOINC.pain }] } }),
    obs("s", LOINC.spo2Pulse, 3, 93),
    obs("e", LOINC.heartRate, 5, 70, { status: "entered-in-error" }),
  ];
  const rows = latestReadings(list);
  assert.deepEqual(rows.map((r) => r.id), ["p", "s", "w", "x2", "x1"]);
  assert.equal(rows[0].label, "Pain");
  assert.equal(rows[0].value, "6");
  assert.equal(rows[0].t, T0 + 1 * DAY);
});
