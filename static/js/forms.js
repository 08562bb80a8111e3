// Forms marked data-reset-after-request are cleared once their htmx request completes
// (e.g. the provider secret rotation form), without inline handlers, so CSP can forbid eval.
document.addEventListener("htmx:afterRequest", function (event) {
  var form = event.target;
  if (form && form.matches && form.matches("form[data-reset-after-request]")) {
    form.reset();
  }
});
