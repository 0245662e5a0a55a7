// The operator's page: confirm an approval before it is sent, and keep the environments overview fresh.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  if (location.pathname === "/" && !document.querySelector("input:focus")) {
    setTimeout(() => location.reload(), 15000);
  }
});
