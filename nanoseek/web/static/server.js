// How the nanoseek web chat talks to its server: settings kept in this browser, the store API (/web/api),
// server errors put into words, the reader of /chat/completions' Server-Sent Events, and durable saving.
//
// Loaded by index.html before app.js, which sets the two `serverHooks` to its dialogs and banner.
//
// Durability: an answer is saved to the server while it streams. Saves of one message are coalesced (at most
// one request in flight, at most one every SAVE_INTERVAL_MS), a failed save is retried until the server
// answers again, and whatever is unsaved when the page goes away is sent with `keepalive` fetches. So a server
// crash mid-answer loses nothing shown (the page still holds it and retries), and a closed tab loses nothing
// either; only a killed browser can lose the last fraction of a second.
"use strict";

const SAVE_INTERVAL_MS = 200;
const SAVE_RETRY_MS = 2000;

const serverHooks = {
  unauthorized: (reason) => {},  // the server wants an API key: ask for one
  problem: (text) => {},         // something the person should read
};

// ---------------------------------------------------------------- settings (kept in this browser only)

const settings = {
  get apiKey() { return localStorage.getItem("nanoseek.apiKey") || ""; },
  get maxTokens() { return parseInt(localStorage.getItem("nanoseek.maxTokens") || "", 10) || null; },
  get temperature() {
    const value = parseFloat(localStorage.getItem("nanoseek.temperature") || "");
    return Number.isFinite(value) ? value : null;
  },
  get deepThinking() { return localStorage.getItem("nanoseek.deepThinking") === "1"; },
  set deepThinking(on) { localStorage.setItem("nanoseek.deepThinking", on ? "1" : "0"); },
  // reasoning_effort in deep thinking (docs/API.md): low | high (DeepSeek's default) | max
  get effort() { return localStorage.getItem("nanoseek.effort") || "high"; },
  set effort(value) { localStorage.setItem("nanoseek.effort", value); },
};

// ---------------------------------------------------------------- talking to the server

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function authHeaders() {
  const headers = { "Content-Type": "application/json" };
  if (settings.apiKey) headers.Authorization = `Bearer ${settings.apiKey}`;
  return headers;
}

async function errorMessageOf(response) {
  const text = await response.text().catch(() => "");
  try { return JSON.parse(text).error?.message || text; } catch { return text; }
}

// A server error status in words a person can act on.
function describeHttpError(status, serverMessage) {
  const detail = serverMessage ? ` (server said: ${serverMessage})` : "";
  if (status === 401) return "The server needs an API key, or refused the one entered. Enter it in Settings.";
  if (status === 402) return `This API key has no balance left${detail}.`;
  if (status === 429) return `Rate limited: too many requests right now. Wait a moment, then press Regenerate${detail}.`;
  if ((status === 400 || status === 413 || status === 422) && /context|too long|maximum.*(length|tokens)/i.test(serverMessage)) {
    return "This conversation is too long for the model's context window. Start a new chat, or edit an earlier " +
      `message to continue from there${detail}.`;
  }
  if (status === 503) return `The server is overloaded right now; try again in a moment${detail}.`;
  if (status >= 500) return `The server hit an internal error${detail}.`;
  return `The request was refused (HTTP ${status})${detail}.`;
}

function unreachableMessage() {
  return `Cannot reach the nanoseek server at ${location.origin}. Check that \`nanoseek serve\` is still running.`;
}

async function storeApi(path, { method = "GET", body } = {}) {
  let response;
  try {
    response = await fetch(`/web/api${path}`, {
      method, headers: authHeaders(), body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, unreachableMessage());
  }
  if (!response.ok) {
    const message = await errorMessageOf(response);
    if (response.status === 401) serverHooks.unauthorized(describeHttpError(401, message));
    throw new ApiError(response.status, describeHttpError(response.status, message));
  }
  return response.json();
}


// ---------------------------------------------------------------- saving streamed messages

const saves = new Map();  // message id -> {message, dirty, inFlight, timer, lastSent}

function saveFields(message) {
  const { content, reasoning_content, thinking_seconds, status, finish_reason, error, model } = message;
  return { content, reasoning_content, thinking_seconds, status, finish_reason, error, model };
}

function scheduleSave(message) {
  let entry = saves.get(message.id);
  if (!entry) { entry = { message, dirty: false, inFlight: null, timer: null, lastSent: 0 }; saves.set(message.id, entry); }
  entry.dirty = true;
  if (entry.inFlight || entry.timer) return;
  const wait = Math.max(0, entry.lastSent + SAVE_INTERVAL_MS - Date.now());
  entry.timer = setTimeout(() => flushSave(entry), wait);
}

function flushSave(entry) {
  entry.timer = null;
  if (pageLeaving) return null;  // the keepalive requests sent at pagehide carry the final text
  if (!entry.dirty || entry.inFlight) return entry.inFlight;
  entry.dirty = false;
  entry.lastSent = Date.now();
  entry.inFlight = storeApi(`/messages/${entry.message.id}`, { method: "PATCH", body: saveFields(entry.message) })
    .then(() => { entry.inFlight = null; if (entry.dirty) scheduleSave(entry.message); else saves.delete(entry.message.id); })
    .catch((error) => {
      entry.inFlight = null;
      const worthRetrying = error.status === 0 || error.status === 401 || error.status === 429 || error.status >= 500;
      if (!worthRetrying) {  // e.g. 404: its conversation was deleted meanwhile
        saves.delete(entry.message.id);
        if (error.status !== 404) serverHooks.problem(`The answer could not be saved: ${error.message}`);
        return;
      }
      entry.dirty = true;  // keep the text and try again once the server answers (or the key is entered)
      entry.timer = setTimeout(() => flushSave(entry), SAVE_RETRY_MS);
    });
  return entry.inFlight;
}

// Resolves once everything the page shows of this message is on the server (retrying while it is unreachable).
async function saveNow(message) {
  scheduleSave(message);
  for (let entry = saves.get(message.id); entry && !pageLeaving; entry = saves.get(message.id)) {
    if (entry.timer) { clearTimeout(entry.timer); entry.timer = null; }
    if (entry.inFlight) { await entry.inFlight; continue; }
    if (!entry.dirty) { saves.delete(message.id); break; }
    await flushSave(entry);  // never rejects: a failure marks the entry dirty again
    if (entry.dirty) await new Promise((resolve) => setTimeout(resolve, SAVE_RETRY_MS));
  }
}

// Leaving the page: every message not yet confirmed saved goes out once more with a request that outlives the
// page (keepalive bodies are limited to 64 KB in all, so a very long answer may still lose its unsaved tail).
let pageLeaving = false;  // after pagehide, a broken stream means "the page went away", not a server error
window.addEventListener("pageshow", () => { pageLeaving = false; });  // back from the back-forward cache
window.addEventListener("pagehide", () => {
  pageLeaving = true;
  for (const entry of saves.values()) {
    fetch(`/web/api/messages/${entry.message.id}`, {
      method: "PATCH", keepalive: true, headers: authHeaders(), body: JSON.stringify(saveFields(entry.message)),
    }).catch(() => {});
  }
});

// Server-sent events: `data: {json}` events separated by blank lines, `: keep-alive` comments, `data: [DONE]`.
async function* serverSentEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    const events = buffer.split(/\r?\n\r?\n/);
    buffer = events.pop();
    for (const event of events) {
      const data = event.split(/\r?\n/).filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}
