// The staff console's few scripts; every page works without them.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Copy a snippet: the Clipboard API where the page is a secure context, else a selection.
  for (const button of document.querySelectorAll("button.copy")) {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      const text = source ? source.textContent : "";
      let done = false;
      if (navigator.clipboard && window.isSecureContext) {
        try { await navigator.clipboard.writeText(text); done = true; } catch (e) { done = false; }
      }
      if (!done && source) {
        const range = document.createRange();
        range.selectNodeContents(source);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        done = document.execCommand("copy");
      }
      const note = button.nextElementSibling;
      if (note && note.classList.contains("copied")) {
        note.textContent = done ? "Copied" : "Selected: press Ctrl+C";
        note.hidden = false;
      }
    });
  }
  // Load a chosen YAML file into the editor.
  for (const input of document.querySelectorAll("input[type=file][data-into]")) {
    input.addEventListener("change", () => {
      const file = input.files && input.files[0];
      const target = document.getElementById(input.dataset.into);
      if (!file || !target) return;
      file.text().then((text) => { target.value = text; });
    });
  }
  // A test flash takes up to its length: say so while it runs.
  const test = document.getElementById("test-form");
  if (test) {
    test.addEventListener("submit", () => {
      const button = document.getElementById("test-flash");
      button.disabled = true;
      button.textContent = "Flashing, waiting for the device…";
    });
  }
});
