// modelyard UI: the token lives in this tab's sessionStorage and goes only in the Authorization
// header of the REST calls this script makes (never in a URL, a cookie or a log).
(() => {  // one scope per page load: a page fetched again with the token runs this again
"use strict";
const KEY = "modelyard-token";
const token = () => sessionStorage.getItem(KEY);
const headers = (extra) => Object.assign({}, extra || {}, token() ? { Authorization: "Bearer " + token() } : {});

function say(text, failed) {
  const box = document.getElementById("message");
  box.textContent = text;
  box.className = failed ? "error" : "ok";
  box.hidden = false;
}

async function api(method, url, body) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = typeof body === "string" ? body : JSON.stringify(body);
  const response = await fetch(url, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { message: text }; }
  if (!response.ok) throw new Error((data && (data.message || data.error)) || response.statusText);
  return data;
}

const actions = {
  async promote(form, model) {
    const moved = await api("POST", `/models/${encodeURIComponent(model)}/versions/${form.version.value}/promote`,
                            { alias: form.alias.value });
    return `${moved.alias} now points at version ${moved.version}`;
  },
  async rollback(form, model) {
    const moved = await api("POST", `/models/${encodeURIComponent(model)}/aliases/${encodeURIComponent(form.alias.value)}/rollback`);
    return `${moved.alias} rolled back to version ${moved.version}`;
  },
  async edit(form, model) {
    let tags;
    try { tags = JSON.parse(form.tags.value || "{}"); } catch (e) { throw new Error("tags must be a JSON object"); }
    await api("PATCH", `/models/${encodeURIComponent(model)}`, { description: form.description.value, tags });
    return "saved";
  },
  async predict(form) {
    const answer = await api("POST", form.dataset.url, form.body.value);
    document.getElementById("answer").textContent = JSON.stringify(answer, null, 2);
    return null;
  },
};

async function reloadWithToken() {
  // A page the anonymous role may not read: fetch it again with the token, and show it.
  const response = await fetch(location.href, { headers: headers() });
  if ((response.headers.get("Content-Type") || "").startsWith("application/json")) {
    const body = await response.json();  // a token the server refused: say why, keep the page
    say(body.message || response.statusText, true);
    return;
  }
  const html = await response.text();
  document.open(); document.write(html); document.close();
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.querySelector("[data-needs-token]") && token()) {
    reloadWithToken();  // the page again, with the token: its own script takes over from there
    return;
  }
  const state = document.getElementById("token-state");
  state.textContent = token() ? "token set" : "no token";
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("token");
    if (input.value) sessionStorage.setItem(KEY, input.value.trim());
    input.value = "";
    state.textContent = token() ? "token set" : "no token";
    if (document.querySelector("[data-needs-token]")) reloadWithToken();
  });
  document.getElementById("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    state.textContent = "no token";
  });
  document.querySelectorAll("form[data-action]").forEach((form) => {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const done = await actions[form.dataset.action](form, form.dataset.model);
        if (done) { sessionStorage.setItem("modelyard-said", done); location.reload(); }
      } catch (error) { say(error.message, true); }
    });
  });
  document.querySelectorAll("[data-download]").forEach((button) => {
    button.addEventListener("click", async () => {
      if (button.dataset.tokenFirst && !token()) {  // a private read: ask for the token, send nothing yet
        say(button.dataset.tokenFirst, true);
        document.getElementById("token").focus();
        return;
      }
      const response = await fetch(button.dataset.download, { headers: headers() });
      if (!response.ok) { const body = await response.json(); say(body.message || response.statusText, true); return; }
      const name = (response.headers.get("Content-Disposition") || "").split("filename=")[1] || "model";
      const link = document.createElement("a");
      link.href = URL.createObjectURL(await response.blob());
      link.download = name.replace(/"/g, "");
      link.click();
    });
  });
  const said = sessionStorage.getItem("modelyard-said");
  if (said) { sessionStorage.removeItem("modelyard-said"); say(said, false); }
});
})();
