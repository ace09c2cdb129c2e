// The clinician view: worklist and patient view over the FHIR API, with
// the token fhirclient obtained at launch. Data shaping is in shape.mjs;
// this file fetches, renders and keeps patients apart.
import {
  DAY, LOINC, VITALS, scoreSeries, trend, vitalSeries, isOut, recordedMME,
  mmeFromOperation, mmeLevel, activeAlerts, worklistOrder, patientName, subjectId,
  latestReadings, readingValue, localRef, effectiveTime,
} from "./shape.mjs";

const $ = (sel) => document.querySelector(sel);
const view = $("#view");
const statusEl = $("#status");
const errorEl = $("#error");

// el builds an element: el("td", {class: "num"}, "12").
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

const fmtTime = (t) => new Date(t).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
const fmtDay = (t) => new Date(t).toLocaleDateString(undefined, { dateStyle: "medium" });
const fmtNum = (v, d = 0) => (v === null || v === undefined ? "—" : Number(v).toFixed(d));
function since(t, now) {
  if (!t) return "no reading";
  const h = Math.round((now - t) / 3600000);
  return h < 1 ? "under 1 h ago" : h < 48 ? `${h} h ago` : `${Math.round(h / 24)} days ago`;
}

function setStatus(text) { statusEl.textContent = text; }
function showError(text) { errorEl.hidden = !text; errorEl.textContent = text || ""; }

// describeError turns a fhirclient error into words for the clinician.
function describeError(err) {
  const s = err?.status ?? err?.statusCode;
  const issue = err?.body?.issue?.[0]?.diagnostics;
  if (s === 401) return "Your session has expired (401). Open the app again to sign in.";
  if (s === 403) return "The server refused access (403)" + (issue ? ": " + issue : ".");
  if (s) return `The server answered ${s}` + (issue ? ": " + issue : ".");
  return "The request failed: " + (err?.message ?? String(err));
}

let client;
let requests = 0; // FHIR requests made for the current screen
let generation = 0; // bumped at every screen change: late answers are dropped
let charts = [];
let capability;

// fetchAll runs a search and follows every next link, returning the
// resources of all pages (included resources too).
async function fetchAll(url, gen) {
  const out = [];
  let next = url;
  while (next) {
    requests++;
    const bundle = await client.request(next);
    if (gen !== generation) throw new Superseded();
    for (const e of bundle.entry ?? []) if (e.resource) out.push(e.resource);
    next = (bundle.link ?? []).find((l) => l.relation === "next")?.url;
  }
  return out;
}

async function fetchOne(url, gen) {
  requests++;
  const r = await client.request(url);
  if (gen !== generation) throw new Superseded();
  return r;
}

class Superseded extends Error {}

function destroyCharts() {
  for (const c of charts) c.destroy();
  charts = [];
}

// startScreen clears what was shown: nothing of the previous patient may
// remain while the next one loads.
function startScreen(label) {
  generation++;
  destroyCharts();
  view.replaceChildren();
  view.setAttribute("aria-busy", "true");
  view.dataset.state = "loading";
  delete view.dataset.patient;
  requests = 0;
  showError("");
  setStatus(label);
  return generation;
}

function finishScreen(gen, label) {
  if (gen !== generation) return;
  view.setAttribute("aria-busy", "false");
  view.dataset.state = "ready";
  view.dataset.requests = String(requests);
  setStatus(label);
}

function failScreen(gen, err) {
  if (err instanceof Superseded || gen !== generation) return;
  view.setAttribute("aria-busy", "false");
  view.dataset.state = "error";
  setStatus("");
  showError(describeError(err));
}

function userLevel() {
  return / user\//.test(" " + (client.state.tokenResponse?.scope ?? ""));
}

// ---------------------------------------------------------------- worklist

async function showWorklist() {
  const gen = startScreen("Loading the worklist…");
  try {
    const now = Date.now();
    const from = new Date(now - 14 * DAY).toISOString();
    const fhirUser = client.getFhirUser?.() ?? null;
    let patients = [];
    if (fhirUser && /^Practitioner\//.test(fhirUser)) {
      patients = await fetchAll(`Patient?general-practitioner=${encodeURIComponent(fhirUser)}&_count=500`, gen);
    }
    if (patients.length === 0) patients = await fetchAll("Patient?_count=500", gen);
    // Flags and DetectedIssues in one search (activeAlerts keeps the live ones).
    const [obs, alertList, meds] = await Promise.all([
      fetchAll(`Observation?date=ge${from}&_count=1000&_elements=status,code,subject,effective,value,component`, gen),
      fetchAll("?_type=Flag,DetectedIssue&_count=1000", gen),
      fetchAll("MedicationRequest?status=active&_count=1000", gen),
    ]);
    const by = (list) => {
      const m = new Map();
      for (const r of list) {
        const id = subjectId(r);
        if (!id) continue;
        if (!m.has(id)) m.set(id, []);
        m.get(id).push(r);
      }
      return m;
    };
    const obsBy = by(obs), alertBy = by(alertList), medBy = by(meds);
    const rows = patients.filter((p) => p.resourceType === "Patient").map((p) => {
      const po = obsBy.get(p.id) ?? [];
      const pain = scoreSeries(po, [LOINC.pain]);
      const alerts = activeAlerts(alertBy.get(p.id) ?? []);
      const mmes = (medBy.get(p.id) ?? []).map(recordedMME).filter((v) => v !== null);
      const times = po.map((o) => Date.parse(o.effectiveDateTime ?? o.effectiveInstant ?? "")).filter((t) => !Number.isNaN(t));
      return {
        id: p.id, name: patientName(p), alerts: alerts.length, highAlerts: alerts.filter((a) => a.high).length,
        latest: pain.at(-1) ?? null, trend: trend(pain, now),
        mme: mmes.length ? mmes.reduce((a, b) => a + b, 0) : null,
        lastReading: times.length ? Math.max(...times) : null,
      };
    });
    renderWorklist(worklistOrder(rows), now);
    finishScreen(gen, `${rows.length} patients, ${requests} requests.`);
    $("#view h2")?.focus();
  } catch (err) {
    failScreen(gen, err);
  }
}

function renderWorklist(rows, now) {
  const body = el("tbody");
  for (const r of rows) {
    const level = r.mme === null ? "unknown" : mmeLevel(r.mme);
    body.append(el("tr", { "data-patient": r.id },
      el("td", { "data-label": "Patient" }, el("a", { href: `#patient/${encodeURIComponent(r.id)}` }, r.name)),
      el("td", { "data-label": "Alerts", class: "num" },
        r.alerts ? el("span", { class: "pill " + (r.highAlerts ? "high" : "elevated") }, `${r.alerts}${r.highAlerts ? " (" + r.highAlerts + " high)" : ""}`) : el("span", { class: "pill none" }, "0")),
      el("td", { "data-label": "Pain", class: "num" }, r.latest ? `${r.latest.v} / 10` : "—"),
      el("td", { "data-label": "Trend (14 days)" },
        el("span", { class: "trend-" + r.trend.direction, title: r.trend.direction }, `${r.trend.arrow} ${r.trend.direction}`)),
      el("td", { "data-label": "MME/day", class: "num" }, r.mme === null ? el("span", { class: "muted", title: "the server recorded no MME" }, "n/a") : el("span", { class: "pill " + level }, fmtNum(r.mme))),
      el("td", { "data-label": "Last reading" }, since(r.lastReading, now)),
    ));
  }
  view.append(
    el("h2", { tabindex: "-1" }, "Worklist"),
    el("p", { class: "muted small" }, "Ordered by high-severity alerts, alerts, worsening pain trend, then time since the last reading."),
    el("table", { class: "worklist" },
      el("thead", {}, el("tr", {},
        el("th", { scope: "col" }, "Patient"), el("th", { scope: "col", class: "num" }, "Alerts"),
        el("th", { scope: "col", class: "num" }, "Pain"), el("th", { scope: "col" }, "Trend (14 days)"),
        el("th", { scope: "col", class: "num" }, "MME/day"), el("th", { scope: "col" }, "Last reading"))),
      body));
}

// ------------------------------------------------------------ patient view

const RANGES = [7, 30, 90];

async function showPatient(id) {
  const gen = startScreen("Loading the patient…");
  view.dataset.patient = id;
  try {
    const now = Date.now();
    const from = new Date(now - 90 * DAY).toISOString();
    const pid = encodeURIComponent(id);
    const mmeOp = await hasOperation("mme", gen);
    const lastnOp = await hasOperation("lastn", gen);
    // Seven searches for the whole view: the care plan brings its goals
    // and the Patient (_include), 90 days of every Observation come in
    // pages of 1000, $lastn the newest reading per code whatever its age,
    // MedicationRequests their Medications, and Flags and DetectedIssues
    // come together with the readings a DetectedIssue implicates.
    const [plans, observations, lastn, medsAll, alertList, visits, mme] = await Promise.all([
      fetchAll(`CarePlan?patient=${pid}&status=active&_include=CarePlan:goal&_include=CarePlan:subject&_count=50`, gen),
      fetchAll(`Observation?patient=${pid}&date=ge${from}&_sort=date&_count=1000`, gen),
      lastnOp ? fetchAll(`Observation/$lastn?patient=${pid}&category=vital-signs,survey,laboratory`, gen) : Promise.resolve(null),
      fetchAll(`MedicationRequest?patient=${pid}&status=active&_include=MedicationRequest:medication&_count=200`, gen),
      fetchAll(`?_type=Flag,DetectedIssue&patient=${pid}&_include=DetectedIssue:implicated&_count=200`, gen),
      fetchAll(`Encounter?patient=${pid}&class=VR&_sort=-date&_count=100`, gen),
      mmeOp ? fetchOne(`Patient/${pid}/$mme`, gen).catch(() => null) : Promise.resolve(null),
    ]);
    // Without an active care plan the Patient was not included.
    const patient = plans.find((r) => r.resourceType === "Patient" && r.id === id) ?? await fetchOne(`Patient/${pid}`, gen);
    const alerts = activeAlerts(alertList);
    // The readings behind the alerts: in the 90 days already read, or
    // included; the few older ones in one more search.
    const byRef = new Map([...observations, ...alertList].filter((r) => r.resourceType === "Observation").map((o) => [`Observation/${o.id}`, o]));
    const missing = [...new Set(alerts.flatMap((a) => a.evidence).filter((r) => r.startsWith("Observation/") && !byRef.has(r)))];
    if (missing.length) {
      for (const o of await fetchAll(`Observation?_id=${missing.map((r) => encodeURIComponent(r.slice(12))).join(",")}&_count=${missing.length}`, gen)) byRef.set(`Observation/${o.id}`, o);
    }
    const scores = observations.filter((o) => o.resourceType === "Observation");
    const latest = latestReadings(lastn ?? latestFromSeries(scores));
    const meds = medsAll.filter((r) => r.resourceType === "MedicationRequest");
    const medications = new Map(medsAll.filter((r) => r.resourceType === "Medication").map((m) => [`Medication/${m.id}`, m]));
    if (gen !== generation) return;
    const data = { now, patient, scores, vitals: scores, meds, medications, alerts, byRef, latest, fromLastn: lastn !== null, plans, visits, mme: mmeFromOperation(mme), range: 30 };
    renderPatient(data, gen);
    finishScreen(gen, `${patientName(patient)}: ${requests} requests.`);
    $("#view h2")?.focus();
  } catch (err) {
    failScreen(gen, err);
  }
}

// latestFromSeries is the newest Observation per first coding, for a
// server without $lastn (only within the 90 days read).
function latestFromSeries(list) {
  const m = new Map();
  for (const o of list) {
    const c = o.code?.coding?.[0];
    const k = c ? `${c.system}|${c.code}` : o.code?.text;
    const prev = m.get(k);
    if (!prev || effectiveTime(o) > effectiveTime(prev)) m.set(k, o);
  }
  return [...m.values()];
}

// hasOperation reads the CapabilityStatement once and says whether the
// server declares an operation, so the app never calls one it lacks.
async function hasOperation(name, gen) {
  if (!capability) capability = await fetchOne("metadata", gen);
  const rest = capability.rest?.[0] ?? {};
  const ops = [...(rest.operation ?? []), ...(rest.resource ?? []).flatMap((r) => r.operation ?? [])];
  return ops.some((o) => o.name === name);
}

function renderPatient(d, gen) {
  const p = d.patient;
  view.append(
    el("p", {}, userLevel() ? el("a", { href: "#" }, "← Worklist") : null),
    el("h2", { tabindex: "-1" }, patientName(p)),
    el("p", { class: "muted" }, [p.gender, p.birthDate ? "born " + p.birthDate : null, p.identifier?.[0]?.value].filter(Boolean).join(" · ")),
  );
  view.append(alertsSection(d));
  view.append(latestSection(d));
  view.append(painSection(d, gen));
  view.append(vitalsSection(d));
  view.append(opioidSection(d));
  view.append(planSection(d));
  view.append(visitsSection(d));
}

function section(title, ...children) {
  const id = "sec-" + title.toLowerCase().replace(/[^a-z0-9]+/g, "-");
  return el("section", { "aria-labelledby": id, class: "card", id: id + "-card" }, el("h3", { id }, title), ...children);
}

function alertsSection(d) {
  if (d.alerts.length === 0) return section("Alerts", el("p", { class: "muted" }, "No active Flags or detected issues."));
  const list = el("ul", { class: "alerts", id: "alerts" });
  for (const a of d.alerts) {
    const r = a.resource;
    const readings = a.evidence.filter((ref) => d.byRef.has(ref)).map((ref) => d.byRef.get(ref))
      .sort((x, y) => effectiveTime(y) - effectiveTime(x));
    // Prescriptions an opioid issue implicates; a Flag the issue cites is on the list already.
    const meds = new Map(d.meds.map((m) => [`MedicationRequest/${m.id}`, m]));
    const others = a.evidence.filter((ref) => meds.has(ref)).map((ref) => medName(meds.get(ref), d.medications));
    const start = r.period?.start ?? r.identifiedPeriod?.start ?? r.identifiedDateTime;
    list.append(el("li", { class: a.high ? "high" : "", "data-alert": `${r.resourceType}/${r.id}` },
      `${r.resourceType === "Flag" ? "Flag" : "Detected issue"}${a.high ? " (high)" : ""}: ${a.text}`,
      start ? el("span", { class: "muted small" }, " since " + fmtTime(Date.parse(start))) : null,
      readings.length ? el("div", { class: "small" }, "Raised by: ",
        readings.map((o, i) => el("span", { class: "reading", "data-ref": `Observation/${o.id}` },
          i ? ", " : "", `${readingValue(o)} at ${fmtTime(effectiveTime(o))}`))) : null,
      others.length ? el("div", { class: "small" }, "Prescriptions: " + others.join(", ")) : null));
  }
  return section("Alerts", list);
}

// latestSection is the newest reading of each code ($lastn), whatever its age.
function latestSection(d) {
  if (d.latest.length === 0) return section("Latest readings", el("p", { class: "muted" }, "No readings."));
  const rows = d.latest.map((r) => [r.label,
    r.abnormal ? el("span", { class: "out" }, `${r.value} (out of range)`) : r.value,
    Number.isNaN(r.t) ? "—" : since(r.t, d.now)]);
  const t = dataTable(["Measure", "Latest", "When"], rows);
  t.id = "latest";
  t.dataset.source = d.fromLastn ? "lastn" : "series";
  return section("Latest readings", el("div", { class: "wide" }, t));
}

// goalHigh is the pain target from the CarePlan's Goal (target.measure
// 72514-3 with detailRange.high or detailQuantity).
function goalHigh(d) {
  for (const g of d.plans.filter((r) => r.resourceType === "Goal")) {
    for (const t of g.target ?? []) {
      if (!(t.measure?.coding ?? []).some((c) => c.code === LOINC.pain)) continue;
      const v = t.detailRange?.high?.value ?? t.detailQuantity?.value;
      if (typeof v === "number") return v;
    }
  }
  return null;
}

function painSection(d, gen) {
  const holder = el("div", { class: "chart", id: "pain-chart", role: "img" });
  const tableHolder = el("div", { class: "scroll" });
  const buttons = RANGES.map((n) => el("button", { type: "button", "data-range": n, "aria-pressed": n === d.range ? "true" : "false" }, `${n} days`));
  const goal = goalHigh(d);
  const draw = () => {
    if (gen !== generation) return;
    const since = d.now - d.range * DAY;
    const pain = scoreSeries(d.scores, [LOINC.pain], since);
    const peg = scoreSeries(d.scores, [LOINC.pegMean], since);
    holder.dataset.points = String(pain.length);
    holder.dataset.since = new Date(since).toISOString();
    holder.setAttribute("aria-label", `Pain scores over ${d.range} days: ${pain.length} readings` +
      (pain.length ? `, latest ${pain.at(-1).v}` : "") + (goal !== null ? `, goal ${goal} or lower` : "") + ". The table below lists them.");
    buttons.forEach((b) => b.setAttribute("aria-pressed", String(Number(b.dataset.range) === d.range)));
    const xs = [...new Set([...pain, ...peg].map((p) => p.t))].sort((a, b) => a - b);
    const at = (list) => { const m = new Map(list.map((p) => [p.t, p.v])); return xs.map((t) => (m.has(t) ? m.get(t) : null)); };
    const series = [{}, { label: "Pain (0-10)", stroke: "#1f5fa8", width: 2, spanGaps: true, points: { show: true, size: 5, fill: "#1f5fa8" } }];
    const cols = [xs.map((t) => t / 1000), at(pain)];
    if (peg.length) { series.push({ label: "PEG mean", stroke: "#7a3fa0", width: 0, points: { show: true, size: 8, fill: "#fff" }, paths: () => null }); cols.push(at(peg)); }
    if (goal !== null) { series.push({ label: `Goal ≤ ${goal}`, stroke: "#1e6b3a", dash: [6, 4], width: 2, points: { show: false } }); cols.push(xs.map(() => goal)); }
    replaceChart(holder, { series, scales: { x: { time: true, range: [since / 1000, d.now / 1000] }, y: { range: [0, 10] } } }, cols);
    tableHolder.replaceChildren(dataTable(["Time", "Pain (0-10)"], pain.map((p) => [fmtTime(p.t), p.v]).reverse()));
  };
  for (const b of buttons) b.addEventListener("click", () => { d.range = Number(b.dataset.range); draw(); });
  queueMicrotask(draw);
  return section("Pain",
    el("div", { class: "ranges", role: "group", "aria-label": "Range" }, buttons),
    holder,
    el("p", { class: "legend-note" }, goal !== null ? `Dashed line: the care plan goal (pain ${goal} or lower).` : "No pain goal in the care plan."),
    el("details", {}, el("summary", {}, "Pain scores as a table"), tableHolder));
}

// chartBox keeps a uPlot instance inside its holder, sized to it.
function replaceChart(holder, opts, data, hooks) {
  const old = charts.find((c) => c.root.parentNode === holder);
  if (old) { old.destroy(); charts = charts.filter((c) => c !== old); }
  const width = Math.max(260, holder.clientWidth || holder.parentNode.clientWidth || 320);
  const u = new uPlot({ width, height: 200, legend: { show: true }, hooks, ...opts }, data, holder);
  charts.push(u);
  return u;
}

function dataTable(head, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => (c instanceof Node ? el("td", {}, c) : el("td", {}, c)))))));
}

function vitalsSection(d) {
  const grid = el("div", { class: "grid" });
  const since = d.now - 90 * DAY;
  for (const v of VITALS) {
    const s = vitalSeries(d.vitals, v, since);
    if (s.readings === 0) continue;
    const holder = el("div", { class: "chart", id: `vital-${v.key}`, role: "img", "data-readings": s.readings, "data-gaps": s.gaps,
      "data-out": s.flags.flat().filter(Boolean).length,
      "data-band": JSON.stringify(s.bands.map((b) => [b.low, b.high])) });
    const out = s.flags.map((f) => f.filter(Boolean).length).reduce((a, b) => a + b, 0);
    const bandText = s.bands.map((b, k) => `${v.parts[k].label} ${b.low !== null ? "below " + b.low : ""}${b.low !== null && b.high !== null ? " or " : ""}${b.high !== null ? "above " + b.high : ""}${b.gainKg ? `gain of ${b.gainKg} kg within ${b.gainDays} days` : ""}`).join("; ");
    holder.setAttribute("aria-label", `${v.title}: ${s.readings} readings in 90 days, ${out} out of range (${bandText}), ${s.gaps} gaps in device data. The table below lists them.`);
    const colors = ["#1f5fa8", "#0f7b6c"];
    const fills = ["rgba(31, 95, 168, 0.09)", "rgba(15, 123, 108, 0.12)"];
    const series = [{}];
    const cols = [s.x];
    v.parts.forEach((p, k) => {
      series.push({ label: `${p.label} (${v.unit})`, stroke: colors[k], width: 2, points: { show: s.readings < 120, size: 4 } });
      cols.push(s.ys[k]);
    });
    v.parts.forEach((p, k) => {
      series.push({ label: `${p.label} out of range`, stroke: "#b3261e", width: 0, paths: () => null, points: { show: true, size: 9, fill: "#b3261e", stroke: "#b3261e" } });
      cols.push(s.ys[k].map((y, i) => (s.flags[k][i] ? y : null)));
    });
    // Each part's normal range is shaded in its colour, its limits dashed.
    const band = (u) => {
      const ctx = u.ctx, { left, top, width, height } = u.bbox;
      ctx.save();
      s.bands.forEach((b, k) => {
        if (b.low === null && b.high === null) return;
        const yHigh = b.high === null ? top : Math.max(top, u.valToPos(b.high, "y", true));
        const yLow = b.low === null ? top + height : Math.min(top + height, u.valToPos(b.low, "y", true));
        ctx.fillStyle = fills[k];
        ctx.fillRect(left, yHigh, width, Math.max(0, yLow - yHigh));
        ctx.strokeStyle = colors[k];
        ctx.setLineDash([5, 4]);
        ctx.lineWidth = 1;
        for (const v of [b.low, b.high]) {
          if (v === null) continue;
          const y = u.valToPos(v, "y", true);
          ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + width, y); ctx.stroke();
        }
      });
      ctx.restore();
    };
    const values = s.ys.flat().filter((y) => y !== null);
    const limits = s.bands.flatMap((b) => [b.low, b.high]).filter((x) => x !== null);
    const lo = Math.min(...values, ...limits), hi = Math.max(...values, ...limits);
    const pad = Math.max(1, (hi - lo) * 0.1);
    const card = el("section", { class: "card", "aria-labelledby": `h-${v.key}` },
      el("h3", { id: `h-${v.key}` }, v.title),
      holder,
      el("p", { class: "legend-note" }, `Shaded between dashed lines: the normal range; out of range is ${bandText}. Red dots: readings out of range. Breaks in the line: no device data.`),
      el("details", {}, el("summary", {}, `${v.title} as a table`), el("div", { class: "scroll" },
        dataTable(["Time", ...v.parts.map((p) => `${p.label} (${v.unit})`)],
          s.x.map((x, i) => [x, i]).filter(([, i]) => s.ids[i] !== null).reverse().map(([x, i]) =>
            [fmtTime(x * 1000), ...v.parts.map((_, k) => (s.flags[k][i] ? el("span", { class: "out" }, `${s.ys[k][i]} (out of range)`) : fmtNum(s.ys[k][i], v.key === "weight" ? 1 : 0)))])))));
    grid.append(card);
    queueMicrotask(() => replaceChart(holder, { series, scales: { x: { time: true, range: [since / 1000, d.now / 1000] }, y: { range: [lo - pad, hi + pad] } } }, cols, { drawClear: [band] }));
  }
  if (grid.children.length === 0) grid.append(el("p", { class: "muted" }, "No device readings in the last 90 days."));
  const wrap = el("section", { "aria-labelledby": "sec-vitals" }, el("h3", { id: "sec-vitals" }, "Remote monitoring (90 days)"), grid);
  return wrap;
}

function medName(mr, medications) {
  const c = mr.medicationCodeableConcept ?? medications?.get(localRef(mr.medicationReference?.reference))?.code;
  return c?.text ?? c?.coding?.[0]?.display ?? mr.medicationReference?.display ?? "Medication";
}

function opioidSection(d) {
  const rows = d.meds.map((mr) => {
    const op = d.mme?.byRequest?.[`MedicationRequest/${mr.id}`];
    return { mr, mme: op ?? recordedMME(mr) };
  });
  const known = rows.filter((r) => r.mme !== null && r.mme !== undefined);
  const total = d.mme?.total ?? (known.length ? known.reduce((a, r) => a + r.mme, 0) : null);
  const level = mmeLevel(total);
  const body = rows.map((r) => [medName(r.mr, d.medications), r.mr.dosageInstruction?.[0]?.text ?? "", r.mme === null || r.mme === undefined ? "n/a" : fmtNum(r.mme, 1)]);
  const scale = total === null ? el("p", { class: "muted", id: "mme-total", "data-mme": "" }, "This server records no MME for these prescriptions.")
    : el("div", {},
      el("p", { id: "mme-total", "data-mme": String(total) }, "Total: ", el("span", { class: "pill " + level }, `${fmtNum(total, 1)} MME/day`),
        level === "high" ? " (at or above 90: taper now)" : level === "elevated" ? " (50 or more: reassess, offer naloxone)" : ""),
      el("div", { class: "mme-scale", role: "img", "aria-label": `Total ${fmtNum(total, 1)} MME/day on a scale with lines at 50 and 90` },
        el("div", { class: "mme-fill " + level, style: null }),
        el("div", { class: "mme-line", "data-at": 50 }, el("span", {}, "50")),
        el("div", { class: "mme-line", "data-at": 90 }, el("span", {}, "90"))));
  if (total !== null) {
    // Positions are set through CSSOM, which the page's CSP allows.
    const max = Math.max(120, total * 1.1);
    queueMicrotask(() => {
      scale.querySelector(".mme-fill").style.width = `${(100 * total) / max}%`;
      for (const l of scale.querySelectorAll(".mme-line")) l.style.left = `${(100 * Number(l.dataset.at)) / max}%`;
    });
  }
  const issues = d.alerts.filter((a) => a.resource.resourceType === "DetectedIssue");
  return section("Medications and MME",
    rows.length ? dataTable(["Medication", "Dosage", "MME/day"], body) : el("p", { class: "muted" }, "No active prescriptions."),
    scale,
    issues.length ? el("ul", { class: "alerts" }, issues.map((a) => el("li", { class: a.high ? "high" : "" }, a.text))) : null);
}

function planSection(d) {
  const plans = d.plans.filter((r) => r.resourceType === "CarePlan");
  const goals = new Map(d.plans.filter((r) => r.resourceType === "Goal").map((g) => [`Goal/${g.id}`, g]));
  if (plans.length === 0) return section("Care plan", el("p", { class: "muted" }, "No active care plan."));
  const meds = new Map(d.meds.map((m) => [`MedicationRequest/${m.id}`, m]));
  return section("Care plan", plans.map((cp) => el("div", {},
    el("p", {}, el("strong", {}, cp.title ?? "Care plan"), cp.period?.start ? el("span", { class: "muted small" }, " since " + fmtDay(Date.parse(cp.period.start))) : null),
    el("ul", {}, (cp.activity ?? []).map((a) => el("li", {},
      a.detail ? `${a.detail.description ?? a.detail.code?.text ?? "Activity"} (${a.detail.status ?? "status unknown"})`
        : a.reference ? `Medication: ${meds.has(a.reference.reference) ? medName(meds.get(a.reference.reference), d.medications) : a.reference.display ?? a.reference.reference}` : "Activity"))),
    el("ul", {}, (cp.goal ?? []).map((r) => goals.get(r.reference)).filter(Boolean).map((g) => el("li", {},
      `Goal: ${g.description?.text ?? "goal"}`,
      g.achievementStatus ? el("span", { class: "muted" }, ` (${g.achievementStatus.text ?? g.achievementStatus.coding?.[0]?.display})`) : null,
      g.target?.[0]?.dueDate ? el("span", { class: "muted small" }, `, due ${g.target[0].dueDate}`) : null))))));
}

function visitsSection(d) {
  const withStart = d.visits.filter((e) => e.resourceType === "Encounter" && e.period?.start)
    .map((e) => ({ e, t: Date.parse(e.period.start) }));
  const next = withStart.filter((v) => v.t >= d.now && ["planned", "arrived", "triaged", "in-progress"].includes(v.e.status)).sort((a, b) => a.t - b.t).slice(0, 2);
  const recent = withStart.filter((v) => v.t < d.now).sort((a, b) => b.t - a.t).slice(0, 3);
  const rows = [...next.map((v) => ["Next", fmtTime(v.t), v.e.status]), ...recent.map((v) => ["Recent", fmtTime(v.t), v.e.status])];
  return section("Virtual visits", rows.length ? dataTable(["", "When", "Status"], rows) : el("p", { class: "muted" }, "No virtual visits."));
}

// ------------------------------------------------------------------ routing

function route() {
  const m = /^#patient\/(.+)$/.exec(location.hash);
  const inContext = client.patient?.id;
  if (m) return showPatient(decodeURIComponent(m[1]));
  if (inContext && !userLevel()) return showPatient(inContext);
  return showWorklist();
}

async function main() {
  try {
    client = await FHIR.oauth2.ready();
  } catch (err) {
    setStatus("");
    showError("Not signed in: " + (err?.message ?? err) + ". ");
    errorEl.append(el("a", { href: "launch.html" }, "Sign in"));
    return;
  }
  const user = client.state.tokenResponse?.id_token ? client.getIdToken?.() : null;
  $("#who").textContent = user?.name ?? user?.preferred_username ?? client.getFhirUser?.() ?? "";
  if (client.patient?.id && !location.hash) history.replaceState(null, "", "#patient/" + encodeURIComponent(client.patient.id));
  window.addEventListener("hashchange", route);
  let resizeTimer;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { for (const c of charts) { const h = c.root.parentNode; if (h) c.setSize({ width: Math.max(260, h.clientWidth), height: 200 }); } }, 150);
  });
  route();
}

main();
