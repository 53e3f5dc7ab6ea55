// Swagger UI for /api/docs/: the schema URL and the CSRF token come from data-
// attributes of #swagger-ui, so the page needs no inline script (CSP).
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  if (!root || typeof window.SwaggerUIBundle !== "function") {
    return;
  }
  var csrfToken = root.dataset.csrfToken || "";
  window.ui = window.SwaggerUIBundle({
    url: root.dataset.schemaUrl,
    domNode: root,
    deepLinking: true,
    persistAuthorization: true,
    // "Try it out" with the browser's session: send the CSRF token on unsafe methods.
    requestInterceptor: function (request) {
      var method = (request.method || "GET").toUpperCase();
      if (["GET", "HEAD", "OPTIONS", "TRACE"].indexOf(method) === -1 && csrfToken) {
        request.headers["X-CSRFToken"] = csrfToken;
      }
      return request;
    },
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
})();
