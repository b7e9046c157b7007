// Shared by the demo (/ui) and the front page (/): calls to the service's own routes, with the token.
"use strict";

const TOKEN_KEY = "model-zoo-token";

class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

// fetch + JSON; a non-2xx answer becomes an ApiError carrying the service's {"error": ...} message.
// options.onTiming, when given, gets the answer's Server-Timing header (null when it has none).
async function api(path, options = {}) {
  const { onTiming, ...init } = options;
  const headers = new Headers(init.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.set("Authorization", "Bearer " + token);
  let response;
  try {
    response = await fetch(path, { ...init, headers });
  } catch (err) {
    throw new ApiError(`the service did not answer (${err.message})`, 0);
  }
  if (onTiming) onTiming(response.headers.get("server-timing"));
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
  if (!response.ok) {
    const detail = body && body.error ? body.error : (text.slice(0, 300) || response.statusText);
    throw new ApiError(`${response.status}: ${detail}`, response.status);
  }
  return body;
}

// every READY model with its family and version, from the repository index and OIP metadata
async function servedModels() {
  const index = await api("/v2/repository/index", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ready: true }),
  });
  const ready = (index || []).filter((m) => m.state === "READY");
  return Promise.all(ready.map(async (m) => {
    const meta = await api(`/v2/models/${encodeURIComponent(m.name)}`);
    const params = meta.parameters || {};
    return { name: m.name, version: (meta.versions || [m.version])[0], family: params.family, panel: params.panel,
             spec: params.spec || {} };
  }));
}

// wires a token form: shown when an API call answered 401, stores the token for this tab
function setupToken(box, form, input, onToken) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
    input.value = "";
    box.hidden = true;
    onToken();
  });
  return (err) => {
    if (err instanceof ApiError && err.status === 401) {
      box.hidden = false;
      input.focus();
      return true;
    }
    return false;
  };
}
