/* kadapt web console: live job progress and the streamed chat. No dependencies, no build step.
 *
 * Every page works with plain forms; this script adds:
 * - an element with data-poll="URL" holds a job's progress panel; while the job runs it is replaced every
 *   second by the panel fetched from URL; when the job ends, elements with data-refresh="URL" reload once;
 * - the chat form posts the conversation to its data-stream URL and appends the answer as it streams in
 *   (newline-delimited JSON), then shows it as the server rendered it (sanitised Markdown) with citation marks,
 *   what answered, and the sources with their supporting sentences; stop, regenerate, copy; the user's
 *   conversations with the KB, kept on the server, to reopen or delete;
 * - a source form shows only the options of the picked connector kind; forms with data-confirm ask first.
 */
(() => {
  "use strict";

  const POLL_MS = 1000;

  const csrfToken = () => document.querySelector('meta[name="csrf-token"]')?.getAttribute("content") ?? "";

  const isTerminal = (panel) => panel.querySelector("[data-terminal]") !== null;

  async function fetchHtml(url) {
    const response = await fetch(url, { headers: { Accept: "text/html" }, credentials: "same-origin" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    return response.text();
  }

  async function refreshAfterJob() {
    for (const element of document.querySelectorAll("[data-refresh]")) {
      try {
        element.innerHTML = await fetchHtml(element.dataset.refresh);
      } catch (error) {
        // the panel keeps its last content; a reload shows the current state
      }
    }
  }

  function follow(panel) {
    if (isTerminal(panel)) return;
    let last = "";
    const poll = async () => {
      try {
        const html = await fetchHtml(panel.dataset.poll);
        if (html !== last) panel.innerHTML = last = html; // unchanged: nothing for screen readers to announce
      } catch (error) {
        panel.insertAdjacentHTML("beforeend", '<p class="error">Lost track of this job; reload the page.</p>');
        return;
      }
      if (isTerminal(panel)) {
        await refreshAfterJob();
      } else {
        window.setTimeout(poll, POLL_MS);
      }
    };
    window.setTimeout(poll, POLL_MS);
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  async function readLines(response, onLine) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { done, value } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      const lines = buffer.split("\n");
      buffer = done ? "" : lines.pop();
      for (const line of lines) {
        if (line.trim()) onLine(JSON.parse(line));
      }
      if (done) return;
    }
  }

  // each source shows where the answer comes from: the sentence the answer cites, quoted as the document has it,
  // else the start of the text the model read
  function showSources(turn, sources, citations) {
    if (!sources.length) {
      turn.append(element("p", "hint", "No documents were put in the prompt: this answer comes from the model."));
      return;
    }
    turn.append(element("h2", "sources-heading", "Sources"));
    const list = element("ol", "sources");
    for (const source of sources) {
      const item = element("li");
      item.id = `${turn.id}-source-${source.index}`;
      item.value = source.index;
      const link = element("a", "", source.title || source.locator);
      link.href = source.href;
      item.append(link, " ", element("span", "sub", source.locator));
      const cited = citations.find((citation) => citation.index === source.index);
      if (cited) {
        item.classList.add("cited");
        item.append(element("blockquote", "quote", cited.quote));
      } else if (source.snippet) {
        item.append(element("p", "snippet", source.snippet));
      }
      list.append(item);
    }
    turn.append(list);
  }

  // the answer as the server rendered it (sanitised Markdown), followed by a marker per cited source
  function finishAnswer(turn, answer, html, citations) {
    if (html !== undefined) answer.innerHTML = html;
    if (!citations.length) return;
    const marks = element("span", "cite-marks");
    for (const citation of citations) {
      const mark = element("a", "cite", `[${citation.index}]`);
      mark.href = `#${turn.id}-source-${citation.index}`;
      mark.setAttribute("aria-label", `source ${citation.index}: ${citation.title || citation.locator}`);
      marks.append(mark);
    }
    (answer.lastElementChild ?? answer).append(" ", marks);
  }

  function answeredBy(by) {
    const parts = [`Answered by ${by.label}`, by.model];
    if (by.adapter) parts.push(`adapter ${by.adapter.slice(0, 8)}`);
    const mark = element("p", "answered-by", parts.join(" · "));
    mark.dataset.mode = by.mode;
    return mark;
  }

  let turns = 0;

  function chat(form) {
    const transcript = document.getElementById("transcript");
    const picker = form.querySelector("#kb");
    const question = form.querySelector("#question");
    const send = form.querySelector("#send");
    const stop = form.querySelector("#stop");
    const status = document.getElementById("chat-status");
    const reportLink = document.getElementById("report-link");
    const list = document.getElementById("conversations");
    let history = [];
    let conversation = null;
    let controller = null;

    const newTurn = (text) => {
      const turn = element("article", "turn");
      turn.id = `turn-${++turns}`;
      const answer = element("div", "answer");
      turn.append(element("p", "question", text), answer);
      transcript.append(turn);
      return { turn, answer };
    };

    const tools = (turn, answer, text, last) => {
      const bar = element("div", "turn-tools");
      const copy = element("button", "small secondary-light", "Copy");
      copy.type = "button";
      copy.addEventListener("click", async () => {
        try {
          await navigator.clipboard.writeText(answer.innerText);
          status.textContent = "Answer copied.";
        } catch (error) {
          status.textContent = "The browser did not allow copying.";
        }
      });
      bar.append(copy);
      if (last) {
        const again = element("button", "small secondary-light", "Regenerate");
        again.type = "button";
        again.addEventListener("click", () => ask(text, { regenerate: turn }));
        bar.append(again);
      }
      turn.querySelector(".turn-tools")?.remove();
      turn.append(bar);
    };

    const clearRegenerate = () => transcript.querySelectorAll(".turn-tools button:nth-child(2)").forEach((b) => b.remove());

    async function loadConversations() {
      if (!list) return;
      try {
        const response = await fetch(`${list.dataset.list}?kb=${encodeURIComponent(picker.value)}`, { credentials: "same-origin" });
        if (!response.ok) throw new Error(String(response.status));
        const rows = await response.json();
        list.replaceChildren();
        for (const row of rows) {
          const item = element("li");
          const open = element("button", "link", row.title || "(untitled)");
          open.type = "button";
          open.setAttribute("aria-label", `Open conversation: ${row.title}`);
          if (row.id === conversation) open.setAttribute("aria-current", "true");
          open.addEventListener("click", () => openConversation(row.id));
          const forget = element("button", "small danger", "Delete");
          forget.type = "button";
          forget.setAttribute("aria-label", `Delete conversation: ${row.title}`);
          forget.addEventListener("click", () => deleteConversation(row.id, row.title));
          item.append(open, element("span", "sub", `${row.turns} · ${row.updated_at}`), forget);
          list.append(item);
        }
        if (!rows.length) list.append(element("li", "muted", "None yet."));
      } catch (error) {
        list.replaceChildren(element("li", "muted", "Your conversations could not be loaded."));
      }
    }

    async function openConversation(id) {
      const response = await fetch(`${list.dataset.list}/${encodeURIComponent(id)}`, { credentials: "same-origin" });
      if (!response.ok) {
        status.textContent = "That conversation is no longer available.";
        return;
      }
      const data = await response.json();
      transcript.replaceChildren();
      history = [];
      conversation = data.id;
      data.turns.forEach((saved, position) => {
        const { turn, answer } = newTurn(saved.question);
        if (saved.answered_by) turn.insertBefore(answeredBy(saved.answered_by), answer);
        finishAnswer(turn, answer, saved.html, saved.citations ?? []);
        showSources(turn, saved.sources ?? [], saved.citations ?? []);
        turn.dataset.done = "ok";
        tools(turn, answer, saved.question, position === data.turns.length - 1);
        history.push({ role: "user", content: saved.question }, { role: "assistant", content: saved.answer });
      });
      status.textContent = `Conversation opened: ${data.turns.length} question(s).`;
      loadConversations();
    }

    async function deleteConversation(id, title) {
      if (!window.confirm(`Delete the conversation “${title}”?`)) return;
      const body = new URLSearchParams({ csrf_token: csrfToken() });
      const response = await fetch(`${list.dataset.list}/${encodeURIComponent(id)}/delete`, {
        method: "POST", credentials: "same-origin", body,
      });
      if (response.ok && id === conversation) startOver();
      loadConversations();
    }

    function startOver() {
      history = [];
      conversation = null;
      transcript.replaceChildren();
      status.textContent = "New conversation.";
    }

    async function ask(text, { regenerate = null } = {}) {
      const asked = regenerate ? history.slice(0, -2) : history;
      const { turn, answer } = regenerate ? { turn: regenerate, answer: regenerate.querySelector(".answer") } : newTurn(text);
      if (regenerate) {
        turn.querySelectorAll(".answered-by, .sources-heading, .sources, .hint, .error, .turn-tools").forEach((node) => node.remove());
        answer.replaceChildren();
      }
      clearRegenerate();
      answer.dataset.chunks = "0";
      answer.setAttribute("aria-busy", "true");
      delete turn.dataset.done;
      send.disabled = true;
      stop.hidden = false;
      status.textContent = "Answering…";
      const messages = [...asked, { role: "user", content: text }];
      let sources = [];
      let outcome = "ok";
      controller = new AbortController();
      try {
        const response = await fetch(form.dataset.stream, {
          method: "POST",
          credentials: "same-origin",
          signal: controller.signal,
          headers: { "Content-Type": "application/json", Accept: "application/x-ndjson", "X-CSRF-Token": csrfToken() },
          body: JSON.stringify({ kb: picker.value, messages, conversation, regenerate: Boolean(regenerate) }),
        });
        if (!response.ok) {
          const body = await response.json().catch(() => ({}));
          throw new Error(body.error?.message ?? `the server answered ${response.status}`);
        }
        await readLines(response, (line) => {
          if (line.type === "sources") {
            sources = line.sources;
            if (line.answered_by) turn.insertBefore(answeredBy(line.answered_by), answer);
          } else if (line.type === "text") {
            answer.textContent += line.text;
            answer.dataset.chunks = String(Number(answer.dataset.chunks) + 1);
          } else if (line.type === "done") {
            conversation = line.conversation ?? conversation;
            finishAnswer(turn, answer, line.html, line.citations ?? []);
            showSources(turn, sources, line.citations ?? []);
          } else if (line.type === "error") {
            throw new Error(line.message);
          }
        });
        history = [...messages, { role: "assistant", content: answer.innerText }];
        status.textContent = "Answer complete.";
        loadConversations();
      } catch (error) {
        if (error.name === "AbortError") {
          outcome = "stopped";
          turn.append(element("p", "hint", "Stopped. The answer above is as far as it got."));
          history = [...messages, { role: "assistant", content: answer.textContent }];
          status.textContent = "Answer stopped.";
        } else {
          outcome = "error";
          turn.append(element("p", "error", `No answer: ${error.message}`));
          status.textContent = "The question could not be answered.";
        }
      } finally {
        controller = null;
        answer.removeAttribute("aria-busy");
        turn.dataset.done = outcome;
        tools(turn, answer, text, true);
        send.disabled = false;
        stop.hidden = true;
        question.focus();
      }
    }

    picker.addEventListener("change", () => {
      startOver();
      if (reportLink) reportLink.href = `/ui/kbs/${encodeURIComponent(picker.value)}/report`;
      loadConversations();
    });
    document.getElementById("new-conversation")?.addEventListener("click", () => {
      startOver();
      loadConversations();
      question.focus();
    });
    stop.addEventListener("click", () => controller?.abort());
    question.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = question.value.trim();
      if (!text || send.disabled) return;
      question.value = "";
      ask(text);
    });
    loadConversations();
  }

  // a source form shows the options of the picked connector kind only; the others are disabled, so not sent
  function kindPicker(picker) {
    const form = picker.form;
    const show = () => {
      for (const fieldset of form.querySelectorAll("fieldset[data-kind]")) {
        const picked = fieldset.dataset.kind === picker.value;
        fieldset.hidden = !picked;
        fieldset.disabled = !picked;
      }
    };
    picker.addEventListener("change", show);
    show();
  }

  // a form with data-confirm="question" is sent only once the user confirms
  function confirmBeforeSubmit(form) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-poll]").forEach(follow);
    document.querySelectorAll("select[data-kind-picker]").forEach(kindPicker);
    document.querySelectorAll("form[data-confirm]").forEach(confirmBeforeSubmit);
    const form = document.getElementById("chat-form");
    if (form) chat(form);
  });
})();
