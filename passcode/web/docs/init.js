// Starts Swagger UI (swagger-ui-dist from npm, served under /vendor/) on the service's own
// /openapi.json. An external file, not Swagger UI's inline initializer, so the page's
// Content-Security-Policy needs no 'unsafe-inline'.
window.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("swagger-ui");
  if (typeof window.SwaggerUIBundle !== "function") {
    root.textContent = "Swagger UI is not installed on this server (make install runs npm ci). The document itself is at /openapi.json.";
    return;
  }
  window.ui = window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    tryItOutEnabled: false,
  });
});
