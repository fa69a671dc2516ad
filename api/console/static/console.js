// The console's one script, progressive enhancement only: every page works
// without it. Copy buttons copy an id; times (<time datetime>) get the
// browser's local time beside their UTC text.
"use strict";
for (const b of document.querySelectorAll("button.copy[data-copy]")) {
  b.hidden = false;
  b.addEventListener("click", () => {
    navigator.clipboard.writeText(b.dataset.copy).then(() => {
      b.textContent = "Copied";
      setTimeout(() => { b.textContent = "Copy"; }, 1500);
    });
  });
}
for (const t of document.querySelectorAll("time[datetime]")) {
  const d = new Date(t.getAttribute("datetime"));
  if (isNaN(d.getTime())) continue;
  const local = document.createElement("small");
  local.className = "local";
  local.textContent = d.toLocaleString([], { dateStyle: "medium", timeStyle: "short" }) + " (your time)";
  t.after(local);
}
