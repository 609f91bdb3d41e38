// The console's sign-in pages: confirmations and a password match check (the server
// checks everything again).
"use strict";
document.addEventListener("submit", (e) => {
  const form = e.target;
  const question = form.dataset.confirm;
  if (question && !window.confirm(question)) e.preventDefault();
  if ("confirmMatch" in form.dataset) {
    const a = form.elements.password, b = form.elements.confirm;
    b.setCustomValidity(a.value === b.value ? "" : "The two passwords differ.");
    if (!b.reportValidity()) e.preventDefault();
  }
});
document.addEventListener("input", (e) => {
  if (e.target.name === "confirm") e.target.setCustomValidity("");
});
