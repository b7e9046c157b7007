// Swagger UI (/docs) over this service's own OpenAPI document; a file, not an inline script, so the
// page's CSP allows only same-origin scripts. Calls carry the token the demo stored for this tab (/ui).
"use strict";
window.ui = SwaggerUIBundle({
  url: "/docs.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null, // no badge image from validator.swagger.io: the page loads nothing from another site
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  requestInterceptor: (request) => {
    const token = sessionStorage.getItem("model-zoo-token"); // common.js TOKEN_KEY
    if (token) request.headers.Authorization = "Bearer " + token;
    return request;
  },
});
