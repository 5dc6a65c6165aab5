/* kadapt web console: live job progress and the streamed chat. No dependencies, no build step.
 *
 * Every page works with plain forms; this script adds:
 * - an element with data-poll="URL" holds a job's progress panel; while the job runs it is replaced every
 *   second by the panel fetched from URL; when the job ends, elements with data-refresh="URL" reload once;
 * - the chat form posts the conversation to its data-stream URL and appends the answer as it streams in
 *   (newline-delimited JSON), then lists the cited sources as links;
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

  // each source the answer cites shows the sentence of it that supports the answer, quoted as the document has it
  function showSources(turn, sources, citations) {
    if (!sources.length) {
      turn.append(element("p", "hint", "No documents were put in the prompt: this KB answers from its adapter."));
      return;
    }
    turn.append(element("h2", "sources-heading", "Sources"));
    const list = element("ol", "sources");
    for (const source of sources) {
      const item = element("li");
      const link = element("a", "", source.title || source.locator);
      link.href = source.href;
      item.append(link, " ", element("span", "sub", source.locator));
      const cited = citations.find((citation) => citation.index === source.index);
      if (cited) item.append(element("blockquote", "quote", cited.quote));
      list.append(item);
    }
    turn.append(list);
  }

  function chat(form) {
    const transcript = document.getElementById("transcript");
    const picker = form.querySelector("#kb");
    const question = form.querySelector("#question");
    const send = form.querySelector("#send");
    const status = document.getElementById("chat-status");
    const reportLink = document.getElementById("report-link");
    let history = [];

    picker.addEventListener("change", () => {
      history = [];
      transcript.replaceChildren();
      if (reportLink) reportLink.href = `/ui/kbs/${encodeURIComponent(picker.value)}/report`;
    });
    question.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        form.requestSubmit();
      }
    });

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const text = question.value.trim();
      if (!text || send.disabled) return;
      const turn = element("article", "turn");
      const answer = element("div", "answer");
      answer.dataset.chunks = "0";
      answer.setAttribute("aria-busy", "true");
      turn.append(element("p", "question", text), answer);
      transcript.append(turn);
      send.disabled = true;
      status.textContent = "Answering…";
      question.value = "";
      const messages = [...history, { role: "user", content: text }];
      let sources = [];
      let citations = [];
      let failed = false;
      try {
        const response = await fetch(form.dataset.stream, {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", Accept: "application/x-ndjson", "X-CSRF-Token": csrfToken() },
          body: JSON.stringify({ kb: picker.value, messages }),
        });
        if (!response.ok) {
          const body = await response.json().catch(() => ({}));
          throw new Error(body.error?.message ?? `the server answered ${response.status}`);
        }
        await readLines(response, (line) => {
          if (line.type === "sources") {
            sources = line.sources;
          } else if (line.type === "text") {
            answer.textContent += line.text;
            answer.dataset.chunks = String(Number(answer.dataset.chunks) + 1);
          } else if (line.type === "done") {
            citations = line.citations ?? [];
          } else if (line.type === "error") {
            throw new Error(line.message);
          }
        });
        showSources(turn, sources, citations);
        history = [...messages, { role: "assistant", content: answer.textContent }];
        status.textContent = "Answer complete.";
      } catch (error) {
        failed = true;
        turn.append(element("p", "error", `No answer: ${error.message}`));
        status.textContent = "The question could not be answered.";
      } finally {
        answer.removeAttribute("aria-busy");
        turn.dataset.done = failed ? "error" : "ok";
        send.disabled = false;
        question.focus();
      }
    });
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
