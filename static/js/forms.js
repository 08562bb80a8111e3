// Form behaviour declared with data attributes, so no template needs an inline handler (our
// Content-Security-Policy blocks them: an onsubmit="return confirm(...)" would silently not run).

// Forms marked data-reset-after-request are cleared once their htmx request completes
// (e.g. the provider secret rotation form).
document.addEventListener("htmx:afterRequest", function (event) {
  var form = event.target;
  if (form && form.matches && form.matches("form[data-reset-after-request]")) {
    form.reset();
  }
});

// Forms with data-confirm="question" submit only after the person confirms (e.g. revoking an
// API key). Capture phase: the question comes before any other submit handler.
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form && form.matches && form.matches("form[data-confirm]") && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
    event.stopImmediatePropagation();
  }
}, true);

// A select inside a form marked data-navigate-on-change goes to the URL that is its value
// (the sidebar's workspace switcher); without JavaScript the form's own Go button does it.
document.addEventListener("change", function (event) {
  var select = event.target;
  if (select && select.matches && select.matches("form[data-navigate-on-change] select") && select.value) {
    window.location.assign(select.value);
  }
});
