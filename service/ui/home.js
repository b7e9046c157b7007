// The front page's model table, from the same routes any client uses.
"use strict";

const box = document.getElementById("error");
const rows = document.getElementById("models");
const needsToken = setupToken(document.getElementById("token-box"), document.getElementById("token-form"),
  document.getElementById("token"), () => listModels());

function cell(text, code) {
  const td = document.createElement("td");
  if (code) { const c = document.createElement("code"); c.textContent = text; td.appendChild(c); } else td.textContent = text;
  return td;
}

async function listModels() {
  box.hidden = true;
  let models;
  try {
    models = await servedModels();
  } catch (err) {
    box.textContent = needsToken(err) ? "401: enter the API token above to list the models" : err.message;
    box.hidden = false;
    rows.innerHTML = "";
    return;
  }
  rows.innerHTML = "";
  if (!models.length) rows.innerHTML = "<tr><td colspan='4' class='muted'>no model is ready</td></tr>";
  for (const m of models) {
    const tr = document.createElement("tr");
    const verb = m.spec.task === "forecast" ? "forecast" : "classify";
    tr.append(cell(m.name), cell(m.family || "?"), cell(m.version), cell(`POST /models/${m.name}/${verb}`, true));
    rows.appendChild(tr);
  }
}

listModels();
