// challenge.mjs — the challenge round trip through the edge, for the host
// glue (tollgate.mjs's guard()). Optional: a worker opts in with
//   import * as challenge from "./challenge.mjs";
//   guard(handler, { ..., challenge })        (workerd: embed this file too)
//
// What it adds to an edge:
//   - The challenge page (a Challenge decision) renders the captcha widget
//     the policy names (Policy.captcha: provider and public site key, read
//     from the sync answers the edge already receives), inside a form that
//     POSTs to the edge itself at /.well-known/tollgate/challenge with
//     tollgate-token (the challenge token), the widget's own field
//     (cf-turnstile-response / h-captcha-response; "response" for the
//     static verifier's plain form) and return (the path to go back to).
//   - That POST is forwarded to the coordinator's /v1/challenge/verify
//     through the edge's own coordinator fetch (a service binding in
//     workerd), with the client address the edge decided the request for.
//     Solved: 303 See Other to return (a same-origin path, else "/") with
//     Set-Cookie: tollgate_clearance=... (HttpOnly; Secure; SameSite=Lax;
//     Max-Age = the clearance's lifetime), the coordinator's cookie.
//     Not solved: the page again with a message and the same token (a
//     wrong answer does not spend it); spent, expired or forged tokens: a
//     page that says so and links back to return, where a new challenge
//     waits; the verifier unavailable: 503 and the page to retry.
// The coordinator never has to be reachable from the internet.
//
// options.challengeOptions (on the guard's options):
//   scriptUrl  the widget script (default: the provider's own; a test
//              serves a stand-in)

export const CHALLENGE_PATH = "/.well-known/tollgate/challenge";
const BODY_MAX = 8192;        // token + a 2,048-character response + return
const WIDGETS = {
  turnstile: { script: "https://challenges.cloudflare.com/turnstile/v0/api.js", cls: "cf-turnstile", field: "cf-turnstile-response" },
  hcaptcha: { script: "https://js.hcaptcha.com/1/api.js", cls: "h-captcha", field: "h-captcha-response" },
};
const MESSAGES = {
  wrong: "That did not work. Please solve the challenge again.",
  spent: "This challenge was already used. Go back to the page to get a new one.",
  expired: "This challenge has expired. Go back to the page to get a new one.",
  invalid: "This challenge is not valid here. Go back to the page to get a new one.",
  unavailable: "Verification is unavailable right now. Please try again in a moment.",
  bad: "The form was incomplete. Please solve the challenge again.",
};

const state = new WeakMap();   // Tollgate -> { captcha }

// ---------------------------------------------------------------- policy
// Reads SyncResponse.policy (6) -> Policy.captcha (5) -> { provider (1),
// site_key (2) } from sync answer bytes. Returns undefined when the answer
// carries no policy (the edge's is current), null for a policy without a
// captcha, else { provider, siteKey }.
export function captchaFromSync(bytes) {
  const policy = field(bytes, 6);
  if (policy === undefined) return undefined;
  const cap = field(policy, 5);
  if (cap === undefined) return null;
  const dec = new TextDecoder();
  const provider = dec.decode(field(cap, 1) ?? new Uint8Array());
  const siteKey = dec.decode(field(cap, 2) ?? new Uint8Array());
  return provider ? { provider, siteKey } : null;
}

// The last length-delimited field number n of a protobuf message, or
// undefined (other wire types skipped).
function field(b, n) {
  let i = 0, out;
  const varint = () => {
    let v = 0, m = 1;
    for (;;) {
      if (i >= b.length) throw new Error("tollgate: truncated protobuf");
      const x = b[i++];
      v += (x & 0x7f) * m;
      if (!(x & 0x80)) return v;
      m *= 128;
    }
  };
  while (i < b.length) {
    const key = varint(), wt = key & 7;
    if (wt === 0) varint();
    else if (wt === 1) i += 8;
    else if (wt === 5) i += 4;
    else if (wt === 2) {
      const len = varint();
      if ((key >>> 3) === n) out = b.subarray(i, i + len);
      i += len;
    } else throw new Error(`tollgate: protobuf wire type ${wt}`);
  }
  return out;
}

// Watches the edge's sync answers for the policy's captcha (the first call
// for a Tollgate; later calls are a map lookup).
function attach(tg) {
  let s = state.get(tg);
  if (s) return s;
  s = { captcha: null };
  state.set(tg, s);
  const inner = tg.fetch;
  tg.fetch = async (url, init) => {
    const resp = await inner(url, init);
    if (resp.status === 200 && String(url).endsWith("/v1/sync")) {
      try {
        const c = captchaFromSync(new Uint8Array(await resp.clone().arrayBuffer()));
        if (c !== undefined) s.captcha = c;
      } catch {
        // The edge core judges the answer; a page without a widget is all
        // a malformed one costs here.
      }
    }
    return resp;
  };
  return s;
}

// ---------------------------------------------------------------- page
function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// A same-origin path to go back to: "/" unless ret is a path on the
// request's own origin ("//evil", "/\\evil", "https://evil" are not).
export function safeReturn(ret, requestUrl) {
  if (typeof ret !== "string" || !ret.startsWith("/") || ret.startsWith("//") || ret.startsWith("/\\")) return "/";
  try {
    const base = new URL(requestUrl);
    const u = new URL(ret, base.origin);
    return u.origin === base.origin ? u.pathname + u.search : "/";
  } catch {
    return "/";
  }
}

// The challenge page: status, the token to submit, where to return, an
// optional message; headers are the decision's (RateLimit, Retry-After).
export function challengePage({ token, ret, message = "", status = 429, headers = [], captcha, scriptUrl }) {
  // No token yet (the edge decided before the coordinator issued one):
  // the next sync brings it, so a reload in a moment shows the widget.
  if (!token && !message) message = "Please reload this page in a moment.";
  const h = new Headers(headers);
  h.set("content-type", "text/html; charset=utf-8");
  h.set("cache-control", "no-store");
  const w = captcha && WIDGETS[captcha.provider];
  const script = w ? `<script src="${escapeHtml(scriptUrl || w.script)}" async defer></script>\n` : "";
  const solve = !token ? ""
    : w ? `<div class="${w.cls}" data-sitekey="${escapeHtml(captcha.siteKey)}"></div>`
      : '<p><label>Answer <input name="response" autocomplete="off" required></label></p>';
  const form = !token ? `<p><a href="${escapeHtml(ret)}">Back to the page</a></p>`
    : `<form method="POST" action="${CHALLENGE_PATH}">
<input type="hidden" name="tollgate-token" value="${escapeHtml(token)}">
<input type="hidden" name="return" value="${escapeHtml(ret)}">
${solve}
<p><button type="submit">Continue</button></p>
</form>`;
  return new Response(`<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Checking your browser</title>
${script}</head>
<body><h1>One more step</h1>
<p>Too many requests came from your network. Solve the challenge to continue.</p>
${message ? `<p id="tollgate-message" role="alert">${escapeHtml(message)}</p>\n` : ""}${form}
</body></html>
`, { status, headers: h });
}

// ---------------------------------------------------------------- round trip
async function readForm(request) {
  const len = Number(request.headers.get("content-length") || 0);
  if (len > BODY_MAX) return null;
  const type = request.headers.get("content-type") || "";
  if (!type.startsWith("application/x-www-form-urlencoded")) return null;
  const text = await request.text();
  return text.length > BODY_MAX ? null : new URLSearchParams(text);
}

// The widget's answer in the form: the provider's field, whichever the
// page rendered (the policy may have changed since).
function answerOf(form) {
  for (const f of ["cf-turnstile-response", "h-captcha-response", "response"]) {
    const v = form.get(f);
    if (v) return v;
  }
  return "";
}

async function verify(tg, request, form, opts, s) {
  const ret = safeReturn(form?.get("return") ?? "/", request.url);
  const token = form?.get("tollgate-token") || "";
  const again = (message, status, keepToken = true) => challengePage({
    token: keepToken ? token : "", ret, message, status, captcha: s.captcha, scriptUrl: opts.scriptUrl,
  });
  if (!form || !token) return again(MESSAGES.bad, 400, Boolean(token));
  const who = tg.clientIp(request);
  const ip = who && who !== "unknown" ? who : "";
  let resp, body;
  try {
    resp = await tg.fetch(new URL("/v1/challenge/verify", tg.opt.coordinator).toString(), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token, response: answerOf(form), ...(ip ? { remote_ip: ip } : {}) }),
      signal: AbortSignal.timeout(tg.opt.syncTimeoutMs * 3),
    });
    body = await resp.json();
  } catch {
    return again(MESSAGES.unavailable, 503);
  }
  if (resp.status === 200 && typeof body.cookie === "string" && body.cookie.startsWith("tollgate_clearance=")) {
    return new Response(null, { status: 303, headers: { location: ret, "set-cookie": body.cookie, "cache-control": "no-store" } });
  }
  const detail = body && typeof body.detail === "string" ? body.detail : "";
  if (resp.status === 409) return again(MESSAGES.spent, 409, false);
  if (resp.status === 403 && detail === "captcha not solved") return again(MESSAGES.wrong, 403);
  if (resp.status === 403) return again(detail.includes("expired") ? MESSAGES.expired : MESSAGES.invalid, 403, false);
  if (resp.status === 400) return again(MESSAGES.bad, 400);
  return again(MESSAGES.unavailable, 503);
}

// guard()'s hook, before the request is decided: answers a POST to
// CHALLENGE_PATH (a GET there is 405), and installs the page for Challenge
// decisions unless the host brought its own. Returns a Response, or null
// for every other request.
export async function intercept(tg, request) {
  const s = attach(tg);
  const opts = tg.opt.challengeOptions || {};
  tg.opt.challengePage ??= (d, req) => challengePage({
    token: d.token, ret: safeReturn(req ? new URL(req.url).pathname + new URL(req.url).search : "/", req?.url ?? "http://x/"),
    status: d.status || 429, headers: d.headers, captcha: s.captcha, scriptUrl: opts.scriptUrl,
  });
  if (!request.url.includes(CHALLENGE_PATH) || new URL(request.url).pathname !== CHALLENGE_PATH) return null;
  if (request.method !== "POST") {
    return new Response("use POST\n", { status: 405, headers: { allow: "POST", "content-type": "text/plain" } });
  }
  return verify(tg, request, await readForm(request), opts, s);
}
