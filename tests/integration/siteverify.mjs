// siteverify.mjs — a local stand-in for Cloudflare Turnstile's and
// hCaptcha's siteverify APIs (the real ones cannot be reached from tests).
//
// It speaks their published API: POST a form (application/x-www-form-
// urlencoded; Turnstile also takes JSON) with secret, response, remoteip
// (hCaptcha: sitekey; Turnstile: idempotency_key), answer JSON
// {"success", "error-codes", ...}. It honours the providers' published
// test keys:
//   Turnstile (POST /turnstile/v0/siteverify)
//     1x0000000000000000000000000000000AA  always passes
//     2x0000000000000000000000000000000AA  always fails (invalid-input-response)
//     3x0000000000000000000000000000000AA  token already spent (timeout-or-duplicate)
//     the test widgets' response is XXXX.DUMMY.TOKEN.XXXX
//   hCaptcha (POST /siteverify)
//     secret 0x0000000000000000000000000000000000000000 with the test site
//     key 10000000-ffff-ffff-ffff-000000000001 passes the response
//     10000000-aaaa-bbbb-cccc-000000000001; another response is
//     invalid-input-response, another site key sitekey-secret-mismatch
// Any other secret is invalid-input-secret. Tests queue faults the real
// services show now and then: sv.faults.push("internal-error" | "slow" |
// "garbage" | "http-500" | "invalid-input-response"), consumed one per
// siteverify request; GET /turnstile/v0/api.js is a stand-in widget
// script (below). Every siteverify request is kept
// in sv.requests (the parsed form) for the test to inspect.
import http from "node:http";

export const TURNSTILE = {
  pass: "1x0000000000000000000000000000000AA",
  fail: "2x0000000000000000000000000000000AA",
  spent: "3x0000000000000000000000000000000AA",
  siteKey: "1x00000000000000000000AA",
  dummyResponse: "XXXX.DUMMY.TOKEN.XXXX",
  path: "/turnstile/v0/siteverify",
  script: "/turnstile/v0/api.js",
};
export const HCAPTCHA = {
  secret: "0x0000000000000000000000000000000000000000",
  siteKey: "10000000-ffff-ffff-ffff-000000000001",
  response: "10000000-aaaa-bbbb-cccc-000000000001",
  path: "/siteverify",
};

const MAX_RESPONSE = 2048;

// The stand-in for Turnstile's widget script (GET /turnstile/v0/api.js, as
// on challenges.cloudflare.com): it renders every .cf-turnstile element the
// way the real one ends, a hidden cf-turnstile-response input holding what
// the test site keys produce, and marks the element rendered.
const WIDGET = `(function () {
  function render() {
    document.querySelectorAll(".cf-turnstile:not([data-rendered])").forEach(function (el) {
      var input = document.createElement("input");
      input.type = "hidden";
      input.name = "cf-turnstile-response";
      input.value = "XXXX.DUMMY.TOKEN.XXXX";
      el.appendChild(input);
      el.setAttribute("data-rendered", el.getAttribute("data-sitekey") || "");
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", render);
  else render();
})();
`;

function turnstileVerdict(f) {
  if (!f.secret) return ["missing-input-secret"];
  if (![TURNSTILE.pass, TURNSTILE.fail, TURNSTILE.spent].includes(f.secret)) return ["invalid-input-secret"];
  if (!f.response) return ["missing-input-response"];
  if (f.response.length > MAX_RESPONSE) return ["invalid-input-response"];
  if (f.idempotency_key !== undefined &&
      !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(f.idempotency_key)) return ["bad-request"];
  if (f.secret === TURNSTILE.fail) return ["invalid-input-response"];
  if (f.secret === TURNSTILE.spent) return ["timeout-or-duplicate"];
  return [];
}

function hcaptchaVerdict(f) {
  if (!f.secret) return ["missing-input-secret"];
  if (f.secret !== HCAPTCHA.secret) return ["invalid-input-secret"];
  if (!f.response) return ["missing-input-response"];
  if (f.sitekey !== undefined && f.sitekey !== HCAPTCHA.siteKey) return ["sitekey-secret-mismatch"];
  if (f.response !== HCAPTCHA.response) return ["invalid-input-response"];
  return [];
}

// Starts the stand-in on a spare loopback port. Resolves to { url(path),
// requests, faults, close() }.
export async function startSiteverify() {
  const sv = { requests: [], faults: [] };
  const pending = new Set();
  const server = http.createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (d) => { body += d; });
    req.on("end", () => {
      if (req.method === "GET" && req.url === TURNSTILE.script) {
        res.writeHead(200, { "content-type": "text/javascript", "cache-control": "no-store" });
        return res.end(WIDGET);
      }
      const type = req.headers["content-type"] || "";
      let form;
      try {
        form = type.startsWith("application/json") && req.url === TURNSTILE.path
          ? JSON.parse(body) : Object.fromEntries(new URLSearchParams(body));
      } catch {
        form = null;
      }
      sv.requests.push({ path: req.url, method: req.method, contentType: type, form });
      const send = (status, obj, raw) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(raw ?? JSON.stringify(obj));
      };
      const fault = sv.faults.shift();
      if (fault === "slow") {
        // Answers (a pass) only after the caller should have given up.
        const t = setTimeout(() => { pending.delete(t); send(200, { success: true, "error-codes": [] }); }, 5000);
        pending.add(t);
        return;
      }
      if (fault === "garbage") return send(200, null, "<html>502 Bad Gateway</html>");
      if (fault === "http-500") return send(500, { success: false, "error-codes": ["internal-error"] });
      if (req.method !== "POST" || form === null) return send(405, { success: false, "error-codes": ["bad-request"] });
      if (fault === "internal-error") return send(200, { success: false, "error-codes": ["internal-error"] });
      // A response the provider does not accept (the test secrets accept
      // every response, so a test asks for a refusal this way).
      if (fault === "invalid-input-response") return send(200, { success: false, "error-codes": ["invalid-input-response"] });
      // "codes:a,b": the provider answers exactly these error codes.
      if (fault?.startsWith("codes:")) return send(200, { success: false, "error-codes": fault.slice(6).split(",") });
      const now = new Date().toISOString();
      if (req.url === TURNSTILE.path) {
        const codes = turnstileVerdict(form);
        return send(200, codes.length ? { success: false, "error-codes": codes, messages: [] }
          : { success: true, "error-codes": [], challenge_ts: now, hostname: "example.com", action: "", cdata: "",
            metadata: { interactive: false }, messages: [] });
      }
      if (req.url === HCAPTCHA.path) {
        const codes = hcaptchaVerdict(form);
        return send(200, codes.length ? { success: false, "error-codes": codes }
          : { success: true, challenge_ts: now, hostname: "dummy-key-pass", credit: false });
      }
      send(404, { success: false, "error-codes": ["bad-request"] });
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  sv.url = (p) => `http://127.0.0.1:${port}${p}`;
  sv.close = () => new Promise((resolve) => {
    for (const t of pending) clearTimeout(t);
    server.closeAllConnections();
    server.close(resolve);
  });
  return sv;
}
