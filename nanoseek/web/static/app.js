// The nanoseek web chat page: the conversation list, the messages, the composer and the streaming of answers.
//
// Served by `nanoseek serve` at / (see nanoseek/web/routes.py). Plain browser JavaScript, no build step: the
// only libraries are the vendored marked (Markdown), DOMPurify (sanitizing model output), highlight.js and KaTeX.
// server.js (loaded first) holds the talking to the server: settings, errors in words, the store API, the
// SSE reader and the durable saving of answers while they stream.
"use strict";

const RENDER_INTERVAL_MS = 50;

const $ = (selector) => document.querySelector(selector);
const el = {
  list: $("#conversation-list"), messages: $("#messages"), empty: $("#empty-state"), banner: $("#banner"),
  composer: $("#composer"), input: $("#input"), send: $("#send"), stop: $("#stop"), thinking: $("#deep-thinking"),
  effort: $("#effort"),
  newChat: $("#new-chat"), settingsButton: $("#settings-button"), dialog: $("#settings-dialog"),
  keyReason: $("#key-reason"), apiKey: $("#api-key"), maxTokens: $("#max-tokens"), temperature: $("#temperature"),
};

serverHooks.unauthorized = (reason) => openSettings(reason);
serverHooks.problem = (text) => showBanner(text);

const state = {
  conversations: [],   // [{id, title, updated_at}]
  current: null,       // {id, title, messages: [...]} or null for a chat not started yet
  busy: false,         // true from Send (or Edit, Regenerate) until the answer is finished and saved
  streaming: null,     // {controller, message} while an answer streams
  renaming: false,     // a title is being edited in the list: refreshing the list must not wipe the input
};

function openSettings(reason = "") {
  el.keyReason.textContent = reason;
  el.keyReason.hidden = !reason;
  el.apiKey.value = settings.apiKey;
  el.maxTokens.value = settings.maxTokens ?? "";
  el.temperature.value = settings.temperature ?? "";
  if (!el.dialog.open) el.dialog.showModal();
  if (reason) el.apiKey.focus();
}

el.dialog.addEventListener("close", () => {
  if (el.dialog.returnValue !== "save") return;
  localStorage.setItem("nanoseek.apiKey", el.apiKey.value.trim());
  localStorage.setItem("nanoseek.maxTokens", el.maxTokens.value.trim());
  localStorage.setItem("nanoseek.temperature", el.temperature.value.trim());
  hideBanner();
  restoreFromLocation();
});

function showBanner(text) { el.banner.textContent = text; el.banner.hidden = false; }
function hideBanner() { el.banner.hidden = true; }

// ---------------------------------------------------------------- rendering

marked.setOptions({ gfm: true, breaks: false });
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") { node.setAttribute("target", "_blank"); node.setAttribute("rel", "noopener noreferrer"); }
});

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
  // Plain-http pages served on a LAN address are not a secure context: fall back to a hidden selection.
  const area = document.createElement("textarea");
  area.value = text;
  area.style.position = "fixed"; area.style.opacity = "0";
  document.body.append(area);
  area.select();
  const copied = document.execCommand("copy");
  area.remove();
  if (!copied) throw new Error("copy refused");
}

function copyButton(getText, label = "Copy") {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "copy";
  button.textContent = label;
  button.addEventListener("click", async () => {
    try { await copyText(getText()); button.textContent = "Copied!"; } catch { button.textContent = "Copy failed"; }
    setTimeout(() => { button.textContent = label; }, 1500);
  });
  return button;
}

// LaTeX in answers, as DeepSeek's chat renders it: $$...$$ and \[...\] as display math, $...$ and \(...\) inline,
// and a bare \boxed{...} (how the model states a final answer). The math is taken out before Markdown (which would
// eat its backslashes and underscores) as private-use placeholders, and put back rendered by KaTeX after
// sanitizing: KaTeX escapes what it renders, and with `trust` off it emits no links, styles or scripts of the
// model's. Code blocks and code spans are left alone; "$5 and $6" stays text ($ must hug its math).
const MATH = /\$\$([\s\S]+?)\$\$|\\\[([\s\S]+?)\\\]|\\\(([\s\S]+?)\\\)|\$(?=\S)((?:\\.|[^$\\\n])+?)(?<=\S)\$(?!\d)|(\\boxed\{(?:[^{}]|\{[^{}]*\})*\})/g;
const CODE = /(```[\s\S]*?(?:```|$)|`[^`\n]*`)/;

function takeOutMath(text, found) {
  return text.split(CODE).map((part, index) => index % 2 ? part : part.replace(MATH, (match, display, bracket, paren, inline, boxed) => {
    found.push({ tex: display ?? bracket ?? paren ?? inline ?? boxed, display: display !== undefined || bracket !== undefined });
    return `\uE000${found.length - 1}\uE001`;
  })).join("");
}

function putBackMath(html, found) {
  return html.replace(/\uE000(\d+)\uE001/g, (_, index) => {
    const { tex, display } = found[Number(index)];
    return katex.renderToString(tex, { displayMode: display, throwOnError: false, trust: false, maxExpand: 200 });
  });
}

// Model output is untrusted: Markdown -> HTML -> DOMPurify -> DOM, then highlight and decorate code blocks.
function renderMarkdown(target, text) {
  const math = [];
  target.innerHTML = putBackMath(DOMPurify.sanitize(marked.parse(takeOutMath(text, math))), math);
  for (const code of target.querySelectorAll("pre > code")) {
    const language = [...code.classList].find((name) => name.startsWith("language-"))?.slice(9);
    if (language && !hljs.getLanguage(language)) code.classList.remove(`language-${language}`);
    hljs.highlightElement(code);
    const header = document.createElement("div");
    header.className = "code-header";
    const name = document.createElement("span");
    name.textContent = language || code.result?.language || "code";
    header.append(name, copyButton(() => code.textContent));
    code.parentElement.before(header);
    code.parentElement.classList.add("code-block");
  }
}

function thoughtLabel(message, live) {
  if (live && message.thinking_seconds == null) return "Thinking…";
  const seconds = Math.max(1, Math.round(message.thinking_seconds || 0));
  return `Thought for ${seconds} second${seconds === 1 ? "" : "s"}`;
}

function statusNote(message, live) {
  if (message.status === "error") return message.error || "The answer failed.";
  if (message.status === "stopped") return "Stopped.";
  if (message.status === "streaming" && !live) return "Interrupted: the answer stopped before it finished.";
  if (message.status === "complete" && message.finish_reason === "length") {
    return message.content ? "Cut off at the token limit (max tokens in Settings)."
      : "Cut off at the token limit while still thinking (max tokens in Settings).";
  }
  if (message.status === "complete" && !message.content && !live) {
    return message.reasoning_content ? "The model finished thinking without writing an answer."
      : "The model returned an empty answer.";
  }
  return "";
}

function renderAssistantBody(article, message, live) {
  const thinking = article.querySelector(".thinking");
  const hasThought = message.reasoning_content != null && (message.reasoning_content !== "" || live);
  thinking.hidden = !hasThought;
  if (hasThought) {
    thinking.querySelector("summary").textContent = thoughtLabel(message, live);
    thinking.querySelector(".thought").textContent = message.reasoning_content;
  }
  const answer = article.querySelector(".answer");
  renderMarkdown(answer, message.content);
  article.querySelector(".pending").hidden = !(live && !message.content && !message.reasoning_content);
  const note = article.querySelector(".note");
  note.textContent = statusNote(message, live);
  note.className = `note ${message.status}`;
}

function messageElement(message, index, messages) {
  const article = document.createElement("article");
  article.className = `message ${message.role}`;
  article.dataset.id = message.id;
  const live = state.streaming?.message === message;
  const actions = document.createElement("div");
  actions.className = "actions";
  if (message.role === "user") {
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = message.content;
    article.append(text, actions);
    const edit = document.createElement("button");
    edit.type = "button"; edit.className = "edit"; edit.textContent = "Edit";
    edit.disabled = state.busy;
    edit.addEventListener("click", () => startEdit(article, message));
    actions.append(edit);
  } else {
    article.innerHTML = `<details class="thinking" open hidden><summary></summary><div class="thought"></div></details>
      <div class="answer markdown"></div><div class="pending" hidden>…</div><div class="note"></div>`;
    article.append(actions);
    renderAssistantBody(article, message, live);
    actions.append(copyButton(() => message.content, "Copy answer"));
    if (index === messages.length - 1 && !live) {
      const regenerate = document.createElement("button");
      regenerate.type = "button"; regenerate.className = "regenerate"; regenerate.textContent = "Regenerate";
      regenerate.disabled = state.busy;
      regenerate.addEventListener("click", () => exclusively(() => generateReply(message.position)));
      actions.append(regenerate);
    }
  }
  return article;
}

function renderMessages() {
  const messages = state.current?.messages || [];
  el.messages.replaceChildren(...messages.map((message, index) => messageElement(message, index, messages)));
  if (!messages.length) el.messages.append(el.empty);
  el.messages.scrollTop = el.messages.scrollHeight;
}

function renderConversationList() {
  if (state.renaming) return;
  el.list.replaceChildren(...state.conversations.map((conversation) => {
    const item = document.createElement("li");
    item.dataset.id = conversation.id;
    item.classList.toggle("active", conversation.id === state.current?.id);
    const open = document.createElement("button");
    open.type = "button"; open.className = "title"; open.textContent = conversation.title || "New chat";
    open.addEventListener("click", () => openConversation(conversation.id));
    const rename = document.createElement("button");
    rename.type = "button"; rename.className = "rename"; rename.title = "Rename"; rename.textContent = "✎";
    rename.addEventListener("click", () => startRename(item, conversation));
    const remove = document.createElement("button");
    remove.type = "button"; remove.className = "delete"; remove.title = "Delete"; remove.textContent = "✕";
    remove.addEventListener("click", () => deleteConversation(conversation));
    item.append(open, rename, remove);
    return item;
  }));
}

function renderControls() {
  el.send.hidden = state.busy;
  el.stop.hidden = !state.busy;
  el.thinking.setAttribute("aria-pressed", String(settings.deepThinking));
  el.effort.value = settings.effort;
  el.effort.hidden = !settings.deepThinking;  // an effort only means something while the model thinks
}

// Streaming re-renders at most every RENDER_INTERVAL_MS: parsing Markdown per token would be quadratic.
let renderTimer = null;
function scheduleLiveRender() {
  if (renderTimer) return;
  renderTimer = setTimeout(() => {
    renderTimer = null;
    const live = state.streaming?.message;
    const article = live && el.messages.querySelector(`article[data-id="${live.id}"]`);
    if (!article) return;
    const nearBottom = el.messages.scrollHeight - el.messages.scrollTop - el.messages.clientHeight < 80;
    renderAssistantBody(article, live, true);
    if (nearBottom) el.messages.scrollTop = el.messages.scrollHeight;
  }, RENDER_INTERVAL_MS);
}

// ---------------------------------------------------------------- conversations

async function loadConversations() {
  try {
    state.conversations = (await storeApi("/conversations")).data;
    hideBanner();
  } catch (error) {
    showBanner(error.message);
  }
  renderConversationList();
}

async function openConversation(id) {
  if (state.busy) return;
  try {
    state.current = await storeApi(`/conversations/${id}`);
    history.replaceState(null, "", `#/c/${id}`);
    hideBanner();
  } catch (error) {
    showBanner(error.message);
    return;
  }
  renderConversationList();
  renderMessages();
}

function newChat() {
  if (state.busy) return;
  state.current = null;
  history.replaceState(null, "", location.pathname);
  renderConversationList();
  renderMessages();
  el.input.focus();
}

function startRename(item, conversation) {
  const input = document.createElement("input");
  input.className = "rename-input";
  input.value = conversation.title;
  input.setAttribute("aria-label", "Conversation title");
  item.replaceChildren(input);
  input.focus();
  input.select();
  state.renaming = true;
  const finish = async (save) => {
    if (!state.renaming) return;
    state.renaming = false;
    const title = input.value.trim();
    if (save && title && title !== conversation.title) {
      try { await storeApi(`/conversations/${conversation.id}`, { method: "PATCH", body: { title } }); }
      catch (error) { showBanner(error.message); }
      if (state.current?.id === conversation.id) state.current.title = title;
    }
    await loadConversations();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") { event.preventDefault(); finish(true); }
    if (event.key === "Escape") finish(false);
  });
  input.addEventListener("blur", () => finish(true));
}

async function deleteConversation(conversation) {
  if (state.busy && state.current?.id === conversation.id) {
    showBanner("Stop the answer (or let it finish) before deleting this conversation.");
    return;
  }
  if (!confirm(`Delete "${conversation.title || "New chat"}"? This cannot be undone.`)) return;
  try { await storeApi(`/conversations/${conversation.id}`, { method: "DELETE" }); }
  catch (error) { showBanner(error.message); return; }
  if (state.current?.id === conversation.id) newChat();
  await loadConversations();
}

// ---------------------------------------------------------------- sending, streaming, stop, edit, regenerate

function startEdit(article, message) {
  if (state.busy) return;
  const box = document.createElement("textarea");
  box.className = "edit-box";
  box.value = message.content;
  const save = document.createElement("button");
  save.type = "button"; save.className = "save-edit"; save.textContent = "Send";
  const cancel = document.createElement("button");
  cancel.type = "button"; cancel.className = "cancel-edit quiet"; cancel.textContent = "Cancel";
  const bar = document.createElement("div");
  bar.className = "actions";
  bar.append(cancel, save);
  article.replaceChildren(box, bar);
  box.focus();
  cancel.addEventListener("click", renderMessages);
  save.addEventListener("click", () => exclusively(async () => {
    const text = box.value.trim();
    if (!text) return;
    try {
      const edited = await storeApi(`/conversations/${state.current.id}/messages`, {
        method: "POST", body: { role: "user", content: text, replace_from: message.position },
      });
      state.current.messages = [...state.current.messages.slice(0, message.position), edited];
    } catch (error) {
      showBanner(error.message);
      return;
    }
    renderMessages();
    await generateReply();
  }));
}

// One action at a time: Send, Edit and Regenerate each run until their answer has finished streaming.
async function exclusively(action) {
  if (state.busy) return;
  state.busy = true;
  renderControls();
  try {
    await action();
  } finally {
    state.busy = false;
    renderControls();
    renderMessages();
  }
}

async function sendMessage(text) {
  try {
    if (!state.current) {
      const created = await storeApi("/conversations", { method: "POST", body: {} });
      state.current = { ...created, messages: [] };
      history.replaceState(null, "", `#/c/${created.id}`);
    }
    const message = await storeApi(`/conversations/${state.current.id}/messages`, {
      method: "POST", body: { role: "user", content: text },
    });
    state.current.messages.push(message);
  } catch (error) {
    showBanner(error.message);
    el.input.value = text;  // give the words back rather than lose them
    return;
  }
  hideBanner();
  renderMessages();
  loadConversations();
  await generateReply();
}

// Streams a new assistant answer for the conversation so far; `replaceFrom` regenerates from that position.
async function generateReply(replaceFrom = null) {
  if (!state.current) return;
  const conversation = state.current;
  const thinking = settings.deepThinking;
  const model = thinking ? "deepseek-reasoner" : "deepseek-chat";
  const kept = replaceFrom === null ? conversation.messages : conversation.messages.slice(0, replaceFrom);
  // Earlier reasoning is never sent back (the API drops it anyway); failed empty answers are skipped.
  const prompt = kept.filter((m) => m.content !== "" || m.role === "user").map((m) => ({ role: m.role, content: m.content }));
  let message;
  try {
    message = await storeApi(`/conversations/${conversation.id}/messages`, {
      method: "POST",
      body: { role: "assistant", content: "", reasoning_content: thinking ? "" : null, model, status: "streaming",
              ...(replaceFrom === null ? {} : { replace_from: replaceFrom }) },
    });
  } catch (error) {
    showBanner(error.message);
    return;
  }
  conversation.messages = [...kept, message];
  const controller = new AbortController();
  state.streaming = { controller, message, stopRequested: false };
  renderControls();
  renderMessages();

  const started = performance.now();
  const endThinking = () => {
    if (message.reasoning_content != null && message.thinking_seconds == null) {
      message.thinking_seconds = (performance.now() - started) / 1000;
    }
  };
  const body = { model, messages: prompt, stream: true };
  if (settings.maxTokens) body.max_tokens = settings.maxTokens;
  if (settings.temperature !== null) body.temperature = settings.temperature;
  if (thinking) body.reasoning_effort = settings.effort;
  try {
    let response;
    try {
      response = await fetch("/chat/completions", {
        method: "POST", headers: authHeaders(), body: JSON.stringify(body), signal: controller.signal,
      });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, unreachableMessage());
    }
    if (!response.ok) {
      const serverMessage = await errorMessageOf(response);
      if (response.status === 401) openSettings(describeHttpError(401, serverMessage));
      throw new ApiError(response.status, describeHttpError(response.status, serverMessage));
    }
    try {
      for await (const chunk of serverSentEvents(response)) {
        if (chunk.error) throw new ApiError(500, `The server stopped the answer: ${chunk.error.message || "unknown error"}`);
        const choice = chunk.choices?.[0];
        if (choice?.finish_reason) message.finish_reason = choice.finish_reason;
        const delta = choice?.delta;
        if (!delta) continue;
        if (delta.reasoning_content) message.reasoning_content = (message.reasoning_content || "") + delta.reasoning_content;
        if (delta.content) { endThinking(); message.content += delta.content; }
        scheduleSave(message);
        scheduleLiveRender();
      }
    } catch (error) {
      if (error.name === "AbortError" || error instanceof ApiError) throw error;
      throw new ApiError(0, "The connection to the server broke off mid-answer; what arrived so far is kept.");
    }
    message.status = "complete";
  } catch (error) {
    if (pageLeaving) {
      // the page itself is going away: the answer stays marked as streaming, shown later as interrupted
    } else if (state.streaming.stopRequested) {
      message.status = "stopped";
    } else {
      message.status = "error";
      message.error = error.message;
    }
  } finally {
    endThinking();
    state.streaming = null;
    renderControls();
    renderMessages();
  }
  // Not awaited: the person may go on while the final save (retried if the server is down) completes.
  saveNow(message).then(loadConversations);  // the list is ordered by last activity, which this answer changed
}

function stopGenerating() {
  // Aborting the fetch closes the connection; the server sees the disconnect and cancels the generation.
  if (!state.streaming) return;
  state.streaming.stopRequested = true;
  state.streaming.controller.abort();
}

// ---------------------------------------------------------------- wiring

el.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = el.input.value.trim();
  if (!text || state.busy) return;
  el.input.value = "";
  exclusively(() => sendMessage(text));
});
el.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    el.composer.requestSubmit();
  }
});
el.stop.addEventListener("click", stopGenerating);
el.thinking.addEventListener("click", () => { settings.deepThinking = !settings.deepThinking; renderControls(); });
el.effort.addEventListener("change", () => { settings.effort = el.effort.value; });
el.newChat.addEventListener("click", newChat);
el.settingsButton.addEventListener("click", () => openSettings());

// The conversation list, and the conversation named in the address (#/c/<id>) so that a reload finds it again.
async function restoreFromLocation() {
  await loadConversations();
  const id = location.hash.match(/^#\/c\/([0-9a-f]+)$/)?.[1];
  if (id && state.current?.id !== id) await openConversation(id);
  else renderMessages();
}

renderControls();
restoreFromLocation().then(() => el.input.focus());
