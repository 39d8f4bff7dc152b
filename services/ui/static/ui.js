// LensQ's web page: the submit form, and the live job list fed by server-sent events. No framework, no build.
"use strict";

const FINAL = new Set(["succeeded", "failed", "cancelled"]);
const STATUS_ORDER = ["succeeded", "failed", "cancelled", "running", "queued"];
const MAX_ROWS = 200;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;  // never innerHTML: job fields are user text
  return node;
}

function shortTime(iso) {
  const when = new Date(iso);
  return isNaN(when) ? "" : when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function jobRow(job) {
  const row = el("li", "job");
  row.id = "job-" + job.id;
  row.dataset.status = job.status;
  row.dataset.created = job.created_at;
  row.dataset.index = job.batch_index === null ? "" : String(job.batch_index);
  const thumb = el("img", "thumb");
  thumb.alt = "";
  thumb.loading = "lazy";
  thumb.src = "/ui/thumbnail?sha256=" + encodeURIComponent(job.image_sha256);
  const main = el("div", "job-main");
  const top = el("div", "job-top");
  top.append(el("span", "task", job.task), el("span", "badge status status-" + job.status, job.status));
  if (job.batch_index !== null) top.append(el("span", "muted small", "#" + job.batch_index));
  top.append(el("time", "job-time", shortTime(job.created_at)));
  main.append(top);
  if (job.asked) main.append(el("div", "asked", job.asked));
  if (job.status === "succeeded") main.append(el("div", "result", job.summary));
  else if (job.error) main.append(el("div", "result bad", job.error));
  row.append(thumb, main);
  return row;
}

function placeRow(list, row) {
  const byIndex = list.dataset.order === "index";
  const before = Array.from(list.querySelectorAll(".job")).find((other) => byIndex
    ? Number(other.dataset.index) > Number(row.dataset.index)
    : other.dataset.created < row.dataset.created);
  list.insertBefore(row, before || null);
}

function upsertJob(list, job) {
  list.querySelector(".empty")?.remove();
  const old = document.getElementById("job-" + job.id);
  const row = jobRow(job);
  if (old) {
    const thumb = old.querySelector(".thumb");
    row.replaceChild(thumb, row.querySelector(".thumb"));  // keep the loaded picture: it never changes
    old.replaceWith(row);
  } else {
    placeRow(list, row);
  }
  const rows = list.querySelectorAll(".job");
  if (list.dataset.order !== "index" && rows.length > MAX_ROWS) rows[rows.length - 1].remove();
}

// --- a batch page: counts and the progress bar follow the jobs' statuses ---------------------------------

function refreshBatch(list) {
  const batch = document.getElementById("batch");
  if (!batch) return;
  const total = Number(batch.dataset.total);
  const rows = list.querySelectorAll(".job");
  if (rows.length < total) return;  // not every job seen yet: the server's counts stay
  const counts = Object.fromEntries(STATUS_ORDER.map((status) => [status, 0]));
  rows.forEach((row) => { counts[row.dataset.status] += 1; });
  STATUS_ORDER.forEach((status) => {
    batch.querySelector(`[data-count="${status}"]`).textContent = counts[status];
    batch.querySelector(`.seg-${status}`).style.width = (100 * counts[status] / total).toFixed(2) + "%";
  });
  const done = STATUS_ORDER.filter((s) => FINAL.has(s)).reduce((sum, s) => sum + counts[s], 0);
  batch.querySelector(".progress").setAttribute("aria-valuenow", String(done));
}

function followJobs(list) {
  const live = document.getElementById("live");
  const source = new EventSource(list.dataset.events);
  source.addEventListener("open", () => live?.classList.add("on"));
  source.addEventListener("error", () => live?.classList.remove("on"));  // the browser reconnects by itself
  source.addEventListener("job", (event) => {
    upsertJob(list, JSON.parse(event.data));
    refreshBatch(list);
  });
  const empty = list.querySelector(".empty");
  if (empty && list.dataset.order !== "index") empty.textContent = "No jobs yet.";
}

// --- the submit form ---------------------------------------------------------------------------------

function showTaskFields(form) {
  const task = form.elements.task.value;
  form.querySelectorAll(".task-field").forEach((field) => {
    const on = field.dataset.task === task;
    field.hidden = !on;
    field.querySelectorAll("input, textarea").forEach((input) => { input.disabled = !on; input.required = on; });
  });
}

function jobForm(form) {
  const data = new FormData();
  data.append("task", form.elements.task.value);
  data.append("image", form.elements.image.files[0]);
  const task = form.elements.task.value;
  if (task === "vqa") data.append("question", form.elements.question.value);
  if (task === "sentiment") data.append("text", form.elements.text.value);
  if (task === "classify") {
    form.elements.labels.value.split(",").map((label) => label.trim()).filter(Boolean)
      .forEach((label) => data.append("labels", label));
  }
  return data;
}

function fieldOf(form, name) {
  const base = String(name || "").split(/[.[]/)[0];
  return form.elements[base] instanceof Element ? form.elements[base] : null;
}

async function submitJob(form, event) {
  event.preventDefault();
  const status = document.getElementById("submit-status");
  const button = form.querySelector("button[type=submit]");
  form.querySelectorAll(".invalid").forEach((node) => node.classList.remove("invalid"));
  button.disabled = true;
  status.className = "status-line";
  status.textContent = "Sending…";
  try {
    const response = await fetch(form.action, { method: "POST", body: jobForm(form),
      headers: { Accept: "application/json" }, credentials: "same-origin" });
    const body = await response.json().catch(() => ({}));
    if (response.ok) {
      status.className = "status-line good";
      status.textContent = "Queued: " + body.task + " job " + body.id.slice(0, 8);
      return;
    }
    const error = body.error || { field: "request", message: response.statusText };
    fieldOf(form, error.field)?.classList.add("invalid");
    status.className = "status-line bad";
    status.textContent = error.field + ": " + error.message;
  } catch (failure) {
    status.className = "status-line bad";
    status.textContent = "Could not reach LensQ: " + failure.message;
  } finally {
    button.disabled = false;
  }
}

// A thumbnail whose image is gone (or was never stored) becomes an empty tile instead of a broken-image icon.
document.addEventListener("error", (event) => {
  if (event.target instanceof HTMLImageElement && event.target.classList.contains("thumb")) {
    event.target.removeAttribute("src");
    event.target.classList.add("missing");
  }
}, true);

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("submit-form");
  if (form) {
    form.elements.task.addEventListener("change", () => showTaskFields(form));
    showTaskFields(form);
    form.addEventListener("submit", (event) => submitJob(form, event));
  }
  const list = document.getElementById("jobs");
  if (list && list.dataset.events) followJobs(list);
});
