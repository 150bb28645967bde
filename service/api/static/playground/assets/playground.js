// The playground: a page that calls this service's public API exactly as a client would, and shows what
// comes back (covers, titles in each script, scores, the explanation, query_info). No framework and no
// build step: the page must work offline, under a CSP that allows only this origin (and image URLs).

const base = document.querySelector('meta[name="avs-base"]').content;
const $ = (id) => document.getElementById(id);
const form = $("search");

// The API key lives in this variable only: never in storage, never in the URL.
let apiKey = "";
let picture = null; // {dataUrl, name}
let similar = null; // {kind, id, title} while "more like this" is shown
let lastMode = null; // what the shown results came from: text, image, multimodal, similar
let runs = 0;

const KIND_NAMES = { anime: "content", visual: "visuals", vector: "all vectors" };
const MULTI = ["genres", "themes", "type", "status"];
const DEFAULTS = { mode: "hybrid", limit: "10", tw: "0.5", iw: "0.5", ranking: "weighted" };

class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

async function api(method, path, body) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (apiKey) headers["x-api-key"] = apiKey;
  const started = performance.now();
  let response;
  try {
    response = await fetch(base + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, "unreachable", `The service did not answer (${err.message}).`);
  }
  const text = await response.text();
  const ms = performance.now() - started;
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : null;
    throw new ApiError(
      response.status,
      error ? error.code : `http_${response.status}`,
      error ? error.message : text.slice(0, 300) || response.statusText,
      error ? error.details : undefined,
    );
  }
  return { data, ms };
}

// -- the form <-> a plain state object <-> the URL ----------------------------------------------

function selected(select) {
  return Array.from(select.selectedOptions, (o) => o.value);
}

function readForm() {
  const state = {
    q: $("q").value.trim(),
    mode: $("mode").value,
    year_min: $("year-min").value,
    year_max: $("year-max").value,
    limit: $("limit").value,
    tw: $("tw").value,
    iw: $("iw").value,
    ranking: $("ranking").value,
  };
  for (const name of MULTI) state[name] = selected($(name));
  return state;
}

function setMulti(select, values) {
  const wanted = new Set(values);
  for (const value of wanted) {
    if (!Array.from(select.options).some((o) => o.value === value)) select.add(new Option(value, value));
  }
  for (const option of select.options) option.selected = wanted.has(option.value);
}

function writeForm(state) {
  $("q").value = state.q || "";
  $("mode").value = state.mode || DEFAULTS.mode;
  $("year-min").value = state.year_min || "";
  $("year-max").value = state.year_max || "";
  $("limit").value = state.limit || DEFAULTS.limit;
  $("tw").value = state.tw || DEFAULTS.tw;
  $("iw").value = state.iw || DEFAULTS.iw;
  $("ranking").value = state.ranking || DEFAULTS.ranking;
  for (const name of MULTI) setMulti($(name), state[name] || []);
  showWeights();
}

function toQuery(state, similarTo) {
  const params = new URLSearchParams();
  if (state.q) params.set("q", state.q);
  for (const [key, fallback] of Object.entries(DEFAULTS)) {
    if (state[key] && state[key] !== fallback) params.set(key, state[key]);
  }
  for (const key of ["year_min", "year_max"]) if (state[key]) params.set(key, state[key]);
  for (const name of MULTI) for (const value of state[name]) params.append(name, value);
  if (similarTo) params.set("similar", `${similarTo.kind}:${similarTo.id}`);
  return params.toString();
}

function fromQuery(search) {
  const params = new URLSearchParams(search);
  const state = { q: params.get("q") || "" };
  for (const key of [...Object.keys(DEFAULTS), "year_min", "year_max"]) state[key] = params.get(key) || "";
  for (const name of MULTI) state[name] = params.getAll(name);
  const like = params.get("similar");
  const split = like ? like.indexOf(":") : -1;
  const similarTo = split > 0 ? { kind: like.slice(0, split), id: like.slice(split + 1), title: null } : null;
  return { state, similarTo };
}

// -- requests -----------------------------------------------------------------------------------

function filtersOf(state) {
  const filters = {};
  for (const name of MULTI) if (state[name].length) filters[name] = state[name];
  if (state.year_min) filters.year_min = Number(state.year_min);
  if (state.year_max) filters.year_max = Number(state.year_max);
  return Object.keys(filters).length ? filters : undefined;
}

function requestFor(state) {
  const limit = Number(state.limit);
  const filters = filtersOf(state);
  if (similar) {
    // The similarity route takes the same filters as query parameters.
    const params = new URLSearchParams({ limit: String(limit) });
    for (const [name, value] of Object.entries(filters || {})) {
      for (const one of [value].flat()) params.append(name, String(one));
    }
    const path = `/api/v1/similarity/${encodeURIComponent(similar.kind)}/${encodeURIComponent(similar.id)}`;
    return { kind: "similar", method: "GET", path: `${path}?${params}` };
  }
  if (picture && state.q) {
    return {
      kind: "multimodal",
      method: "POST",
      path: "/api/v1/search/multimodal",
      body: {
        query: state.q,
        image: picture.dataUrl,
        text_weight: Number(state.tw),
        image_weight: Number(state.iw),
        ranking: state.ranking,
        limit,
        filters,
      },
    };
  }
  if (picture) {
    return { kind: "image", method: "POST", path: "/api/v1/search/image", body: { image: picture.dataUrl, limit, filters } };
  }
  if (state.q) {
    return {
      kind: "text",
      method: "POST",
      path: "/api/v1/search",
      body: { query: state.q, text_mode: state.mode, limit, filters },
    };
  }
  return null;
}

async function run({ push }) {
  const state = readForm();
  const request = requestFor(state);
  if (push) {
    const query = toQuery(state, similar);
    if (query !== location.search.slice(1)) history.pushState(null, "", query ? `?${query}` : location.pathname);
  }
  if (!request) {
    showError(null);
    $("message").textContent = "Type a query or give a picture.";
    return;
  }
  const run = ++runs;
  document.body.dataset.busy = "yes";
  $("results").setAttribute("aria-busy", "true");
  $("go").disabled = true;
  $("message").textContent = "Searching…";
  try {
    const { data, ms } = await api(request.method, request.path, request.body);
    if (run !== runs) return; // a newer search has started: its answer is the one to show
    showError(null);
    lastMode = request.kind;
    render(data, ms, request.kind);
  } catch (err) {
    if (run !== runs) return;
    showError(err);
  } finally {
    if (run === runs) {
      $("results").removeAttribute("aria-busy");
      $("go").disabled = false;
      document.body.dataset.busy = "no";
    }
  }
}

// -- rendering ----------------------------------------------------------------------------------

function showError(err) {
  const box = $("error");
  box.replaceChildren();
  box.hidden = !err;
  if (!err) return;
  const code = document.createElement("code");
  code.textContent = err.code;
  const status = err.status ? ` (HTTP ${err.status})` : "";
  box.append(code, `${status}: ${err.message}`);
  if (err.details !== undefined && err.details !== null) {
    const details = document.createElement("pre");
    details.textContent = JSON.stringify(err.details, null, 1).slice(0, 800);
    box.append(details);
  }
  $("results").replaceChildren();
  $("info").hidden = true;
  $("message").textContent = "";
  if (err.status === 401 || err.status === 403) {
    box.append(" Enter an API key above and search again.");
    $("api-key").focus();
  }
}

function scriptLang(text) {
  if (/[\u3040-\u30ff]/.test(text)) return "ja";
  if (/[\u4e00-\u9fff]/.test(text)) return "zh";
  if (/[\uac00-\ud7af]/.test(text)) return "ko";
  return "en";
}

// The titles a card shows under the main one: one in each script the anime has a name in. The sources
// often keep the Japanese (kana) and Chinese names among the synonyms only.
function otherTitles(result) {
  const named = [result.title, result.title_japanese, result.title_english].filter(Boolean);
  const titles = named.slice(1);
  for (const lang of ["ja", "zh"]) {
    if (!named.some((t) => scriptLang(t) === lang)) {
      const synonym = (result.synonyms || []).find((s) => scriptLang(s) === lang);
      if (synonym) titles.push(synonym);
    }
  }
  const seen = new Set([result.title]);
  return titles.filter((t) => !seen.has(t) && seen.add(t));
}

function span(text, className) {
  const node = document.createElement("span");
  node.textContent = text;
  if (className) node.className = className;
  return node;
}

function explanationNodes(explanation) {
  const nodes = [];
  if (explanation.vectors && explanation.vectors.length) {
    const table = document.createElement("table");
    const head = table.createTHead().insertRow();
    for (const name of ["list", "rank", "score"]) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = name;
      head.append(th);
    }
    const body = table.createTBody();
    for (const match of explanation.vectors) {
      const row = body.insertRow();
      row.insertCell().textContent = match.vector;
      const rank = row.insertCell();
      rank.textContent = String(match.rank);
      rank.className = "num";
      const score = row.insertCell();
      score.textContent = match.score.toFixed(4);
      score.className = "num";
    }
    const caption = table.createCaption();
    caption.textContent = "Matched in these lists";
    nodes.push(table);
  }
  if (explanation.part_scores) {
    const parts = Object.entries(explanation.part_scores).map(([k, v]) => `${k} ${v.toFixed(4)}`);
    const p = document.createElement("p");
    p.textContent = `Part scores: ${parts.join(", ")}`;
    nodes.push(p);
  }
  for (const [key, label] of [
    ["shared_genres", "Shared genres"],
    ["shared_themes", "Shared themes"],
    ["shared_tags", "Shared tags"],
  ]) {
    if (explanation[key] && explanation[key].length) {
      const p = document.createElement("p");
      p.textContent = `${label}: ${explanation[key].join(", ")}`;
      nodes.push(p);
    }
  }
  return nodes;
}

function card(result) {
  const node = $("card").content.firstElementChild.cloneNode(true);
  node.dataset.animeId = result.anime_id;
  const cover = node.querySelector(".cover");
  const url = result.picture || result.thumbnail;
  // A cover that does not load (or none at all) becomes a neutral block, not a broken picture.
  const placeholder = () => {
    const block = document.createElement("div");
    block.className = "cover missing";
    cover.replaceWith(block);
  };
  cover.addEventListener("error", placeholder);
  if (url) {
    cover.src = url;
    cover.alt = `Cover of ${result.title}`;
  } else {
    placeholder();
  }
  const title = node.querySelector(".title");
  title.textContent = result.title;
  title.lang = scriptLang(result.title);
  const scripts = node.querySelector(".scripts");
  for (const [i, other] of otherTitles(result).entries()) {
    if (i) scripts.append(" · ");
    const s = span(other);
    s.lang = scriptLang(other);
    scripts.append(s);
  }
  const meta = [result.year, result.type, result.status, result.episodes ? `${result.episodes} ep.` : null];
  node.querySelector(".meta").textContent = [...meta, ...(result.studios || [])].filter(Boolean).join(" · ");
  const explanation = result.explanation;
  const shared = new Set([...(explanation?.shared_genres || []), ...(explanation?.shared_themes || [])]);
  const chips = node.querySelector(".chips");
  for (const value of [...(result.genres || []), ...(result.themes || [])]) {
    chips.append(span(value, shared.has(value) ? "shared" : ""));
  }
  const synopsis = node.querySelector(".synopsis");
  synopsis.textContent = result.synopsis || "";
  if (result.synopsis) synopsis.lang = scriptLang(result.synopsis);
  const why = node.querySelector(".why");
  if (explanation) node.querySelector(".why-body").append(...explanationNodes(explanation));
  else why.remove();
  node.querySelector(".score").textContent = result.score.toFixed(4);
  const more = node.querySelector(".more");
  more.setAttribute("aria-label", `More like ${result.title}`);
  for (const button of more.querySelectorAll("button")) {
    button.setAttribute("aria-label", `More like ${result.title}: ${button.textContent}`);
    button.addEventListener("click", () => {
      similar = { kind: button.dataset.kind, id: result.anime_id, title: result.title };
      run({ push: true }).then(() => $("answer-title").focus());
    });
  }
  return node;
}

function infoRow(list, name, value, warn) {
  const row = document.createElement("div");
  if (warn) row.className = "warn";
  const dt = document.createElement("dt");
  dt.textContent = name;
  const dd = document.createElement("dd");
  dd.textContent = value;
  row.append(dt, dd);
  list.append(row);
}

function render(data, ms, kind) {
  const info = data.query_info;
  const list = $("info");
  list.replaceChildren();
  infoRow(list, "latency", `${Math.round(ms)} ms`);
  if (info) {
    infoRow(list, "server", `${info.took_ms.toFixed(1)} ms`);
    infoRow(list, "model", info.text_version ? `${info.model} v${info.text_version}` : info.model);
    if (info.mode) infoRow(list, "mode", info.mode);
    if (info.ranking) infoRow(list, "ranking", info.ranking);
    if (info.weights) {
      infoRow(list, "weights", Object.entries(info.weights).map(([k, v]) => `${k} ${v}`).join(", "));
    }
    if (info.vectors && info.vectors.length) infoRow(list, "lists", info.vectors.join(", "));
    if (info.cached) infoRow(list, "cached", "yes");
    if (info.truncated) infoRow(list, "truncated", "the query was cut to the model's window", true);
    if (info.degraded && info.degraded.length) infoRow(list, "degraded", info.degraded.join(", "), true);
  }
  list.hidden = false;
  const heading = $("answer-title");
  if (kind === "similar") {
    const name = similar.title || similar.id;
    heading.textContent = `More like ${name} (${KIND_NAMES[similar.kind] || similar.kind})`;
  } else {
    heading.textContent = "Results";
  }
  const results = data.results || [];
  $("results").replaceChildren(...results.map(card));
  const note = kind !== "similar" && picture ? " The picture is not part of the page's link." : "";
  $("message").textContent = results.length ? `${results.length} of ${data.total}.${note}` : `No match.${note}`;
  if (results.length && !performance.getEntriesByName("avs-first-results").length) {
    performance.mark("avs-first-results");
  }
}

// -- facets (the filters' choices come from the collection itself) ------------------------------

async function loadFacets() {
  let data;
  try {
    ({ data } = await api("GET", "/api/v1/facets?limit=200"));
  } catch (err) {
    if (err.status === 401 || err.status === 403) {
      $("message").textContent = "This service needs an API key for searches: enter it above.";
    } else {
      $("message").textContent = `Filter choices unavailable: ${err.message}`;
    }
    return;
  }
  const lists = { genres: data.genres, themes: data.themes, type: data.types, status: data.statuses };
  for (const [name, values] of Object.entries(lists)) {
    const select = $(name);
    const keep = selected(select);
    select.replaceChildren(...values.map((v) => new Option(`${v.value} (${v.count})`, v.value)));
    setMulti(select, keep);
  }
  for (const id of ["year-min", "year-max"]) {
    if (data.year_min) $(id).min = String(data.year_min);
    if (data.year_max) $(id).max = String(data.year_max);
  }
  $("year-min").placeholder = data.year_min ? String(data.year_min) : "";
  $("year-max").placeholder = data.year_max ? String(data.year_max) : "";
  document.body.dataset.facets = "loaded";
}

// -- the picture --------------------------------------------------------------------------------

function usePicture(file) {
  if (!file) return;
  const reader = new FileReader();
  reader.addEventListener("load", () => {
    picture = { dataUrl: String(reader.result), name: file.name || "pasted picture" };
    $("preview-img").src = picture.dataUrl;
    $("preview-name").textContent = picture.name;
    $("preview").hidden = false;
    $("mix").disabled = false;
    similar = null;
    run({ push: true });
  });
  reader.addEventListener("error", () => showError(new ApiError(0, "unreadable_file", "The file could not be read.")));
  reader.readAsDataURL(file);
}

function clearPicture() {
  picture = null;
  $("picture").value = "";
  $("preview").hidden = true;
  $("preview-img").removeAttribute("src");
  $("mix").disabled = true;
}

function showWeights() {
  $("tw-out").value = Number($("tw").value).toFixed(2);
  $("iw-out").value = Number($("iw").value).toFixed(2);
}

// -- wiring -------------------------------------------------------------------------------------

form.addEventListener("submit", (event) => {
  event.preventDefault();
  similar = null;
  run({ push: true });
});
$("api-key").addEventListener("change", () => {
  apiKey = $("api-key").value.trim();
  if (document.body.dataset.facets !== "loaded") loadFacets();
});
$("picture").addEventListener("change", () => usePicture($("picture").files[0]));
$("clear-picture").addEventListener("click", () => {
  clearPicture();
  $("picture").focus();
});
$("clear-filters").addEventListener("click", () => {
  for (const name of MULTI) setMulti($(name), []);
  $("year-min").value = "";
  $("year-max").value = "";
});
const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  usePicture(event.dataTransfer.files[0]);
});
document.addEventListener("paste", (event) => {
  const file = Array.from(event.clipboardData?.files || []).find((f) => f.type.startsWith("image/"));
  if (file) {
    event.preventDefault();
    usePicture(file);
  }
});
for (const id of ["tw", "iw"]) {
  $(id).addEventListener("input", showWeights);
  // A weight or the ranking changes what a text + picture search returns: show it at once.
  $(id).addEventListener("change", () => lastMode === "multimodal" && run({ push: true }));
}
$("ranking").addEventListener("change", () => lastMode === "multimodal" && run({ push: true }));
window.addEventListener("popstate", () => restore());

function restore() {
  const { state, similarTo } = fromQuery(location.search);
  writeForm(state);
  similar = similarTo;
  if (state.q || similar) run({ push: false });
}

// On a phone the results come right after the text box: the weights and filters start folded.
if (window.matchMedia("(max-width: 720px)").matches) {
  for (const fold of document.querySelectorAll("details.fold")) fold.open = false;
}
document.body.dataset.busy = "no";
restore();
loadFacets();
